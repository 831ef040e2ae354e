"""A hospital's running datasite: build and serve it, ingest its partition, and let its owner decide.

``datasite`` builds or reopens the PySyft server from a state dir, ``syft_patches``
patches PySyft 0.9.5 once (in a documented order) before it serves, ``serve`` is
``fedimg datasite serve``, ``ingest`` and ``mock`` upload the partition with its
mock twins, ``heap`` tunes glibc for the large copies, ``credentials`` keeps the
admin and researcher logins, ``federation_config`` reads ``federation.toml``,
``federation_runner`` is ``fedimg up/status/down``, ``site_admin`` talks to a site
over HTTP, and ``code_requests`` with ``review_command`` is the owner's review.
The site uses the converter (to read a partition) and ``policies`` (the rules it
enforces); nothing below it imports it.
"""
