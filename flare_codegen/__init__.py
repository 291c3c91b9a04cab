"""protoc-gen-flare and the flare command-line tools."""
