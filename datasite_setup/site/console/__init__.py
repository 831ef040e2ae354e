"""The owner console (issue 12): a web page where a site's data owner sees and decides every request.

``fedimg console federation.toml`` serves it (``launch.serve``), on loopback by default.
It is a separate process that imports no PySyft: it reaches each site only over the
site's owner channel (``owner_channel.client.ask``), which answers in the site process
and writes the audit records naming the owner. ``app`` holds the routes, ``sessions``
the server-side sessions and CSRF tokens, ``site_links`` the parallel calls to the sites,
``pages`` what each page shows, ``code_view`` the highlighted code with its findings,
``label_plot`` the inline SVG of the label counts; ``templates/`` and ``static/`` are
the HTML and the one stylesheet.
"""

from datasite_setup.site.console.app import create_app
from datasite_setup.site.console.launch import DEFAULT_HOST, DEFAULT_PORT, check_host, serve
from datasite_setup.site.console.site_links import ConsoleSite

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ConsoleSite", "check_host", "create_app", "serve"]
