"""Echo server on Python's asyncio, idiomatic (Protocol API). Usage: PORT"""
import asyncio
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", int(sys.argv[1]), backlog=511)
    async with server:
        await server.serve_forever()


asyncio.run(main())
