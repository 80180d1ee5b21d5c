"""HTTP plumbing: the ASGI middleware (request ids and access log, body limits, the POST rate limit),
the API docs page and the shapes the API answers with."""
