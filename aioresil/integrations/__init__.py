"""Integrations with HTTP clients and servers, each behind its own extra.

* :mod:`aioresil.integrations.httpx`: ``ResilientTransport`` for ``httpx.AsyncClient`` (and so
  for the OpenAI SDK's ``http_client=``); ``pip install 'aioresil[httpx]'``.
* :mod:`aioresil.integrations.httpx2`: the same for ``httpx2.AsyncClient`` (the Anthropic SDK
  and newer OpenAI SDKs are built on it).
* :mod:`aioresil.integrations.aiohttp`: a client middleware for ``aiohttp.ClientSession``
  (aiohttp >= 3.12); ``pip install 'aioresil[aiohttp]'``.
* :mod:`aioresil.integrations.starlette`: admission control for ASGI servers (a bulkhead and
  a rate limit answering 503 / 429 with ``Retry-After``), as middleware or as a FastAPI
  dependency; ``pip install 'aioresil[starlette]'``.

Nothing is imported here: ``import aioresil`` never pulls in an HTTP library.
"""
