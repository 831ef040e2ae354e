"""The owner channel: a local, owner-only Unix socket served by the datasite process (issue 11).

``fedimg status`` and ``fedimg review`` used to import PySyft and log in over HTTP on
every call (19-26 s). A running site now also listens on ``<state_dir>/owner-channel/
owner.sock`` (the socket 0600 in a 0700 folder, refused to any other uid) for small
JSON-lines requests, and answers them in-process with its own PySyft services and the
same review code as ``fedimg review`` over HTTP (``review_command.review_with``).

``protocol`` is the wire format, ``server`` the socket the site serves, ``handlers``
what the site answers, ``client`` what the CLI asks (without importing PySyft),
``site_access`` and ``site_status`` the light types the CLI needs on that path.
"""
