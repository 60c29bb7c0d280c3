"""All network I/O: the aiohttp server, the jambonz WS client."""
