"""Echo server on Twisted, idiomatic (Protocol.dataReceived -> write).
Run with Debian's /usr/bin/python3 (python3-twisted). Usage: PORT"""
import sys

from twisted.internet import protocol, reactor


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


f = protocol.Factory.forProtocol(Echo)
reactor.listenTCP(int(sys.argv[1]), f, backlog=511, interface="127.0.0.1")
reactor.run()
