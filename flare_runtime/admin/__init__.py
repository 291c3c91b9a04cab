"""The admin API (``flare.admin.v1.Admin``): see and steer a running node.

`flare_runtime.admin.service.AdminService` serves it (``[admin] enabled`` in
the configuration adds it); ``flare admin`` (`flare_runtime.cli.admin`) is its
command line. docs/operations.md, "Admin API", is the guide.
"""

from __future__ import annotations
