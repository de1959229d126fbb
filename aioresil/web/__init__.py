"""The HTTP plumbing shared by the health app, the dashboard and the commands that serve them.

* :mod:`aioresil.web.asgi`: ASGI 3 send helpers, JSON bodies, lifespan, the admin token check.
* :mod:`aioresil.web.server`: a listening socket with ``TCP_NODELAY`` and a uvicorn runner
  that binds before it announces and exits 0 on SIGTERM.

Why a package of its own: the health app and the dashboard used to implement each of these
three times, with different token rules; one copy keeps them the same.
"""
