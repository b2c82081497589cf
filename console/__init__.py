"""The minipay web console: a browser client of the gateway (``python -m console``).

It is just another client: it talks only to the gateway's gRPC API, over mutual TLS with a
certificate of its own, through the client library, and never opens a database. People sign
in with their minipay username and password; their token stays in the console's memory and
the browser holds only a session cookie. See README "The console".
"""
