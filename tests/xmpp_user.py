#!/usr/bin/python3
"""An XMPP user for the end-to-end tests, on slixmpp (Debian's python3-slixmpp).

A client that is not ours, so our component and our tests cannot agree on a
mistake. It logs in, sends presence, prints one JSON line per event on
stdout ({"event": "online", "jid": ...}, {"event": "message", "xml": ...})
and reads JSON commands on stdin ({"op": "raw", "xml": ...}, {"op": "quit"},
{"op": "join", "room": ..., "nick": ...}: joins a group chat with slixmpp's
own XEP-0045 plugin, which waits for the room's self-presence, then prints
{"event": "joined"} or {"event": "join_failed", "error": ...}).

Usage: xmpp_user.py JID PASSWORD PORT
"""
import asyncio
import json
import sys

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath


# Events go to the real stdout; anything else printed (slixmpp 1.8's
# XEP-0045 plugin prints each history message's <delay/>) goes to stderr.
EVENTS = sys.stdout
sys.stdout = sys.stderr


def emit(obj):
    EVENTS.write(json.dumps(obj) + "\n")
    EVENTS.flush()


class User(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self["feature_mechanisms"].unencrypted_plain = True
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: emit({"event": "failed_auth"}))
        # Every message stanza (errors and receipts included), every IQ
        # answer and every presence, for the test to read.
        self.register_handler(
            Callback("all messages", MatchXPath("{%s}message" % self.default_ns), self.on_message)
        )
        self.register_handler(
            Callback("iq answers", MatchXPath("{%s}iq" % self.default_ns), self.on_iq)
        )
        self.register_handler(
            Callback("presence", MatchXPath("{%s}presence" % self.default_ns), self.on_presence)
        )

    async def on_start(self, _event):
        if getattr(self, "_started", False):
            return
        self._started = True
        # Like a real client: fetch the roster (so the server pushes changes
        # to it), then become available.
        await self.get_roster()
        self.send_presence()
        emit({"event": "online", "jid": str(self.boundjid)})
        # Keep a reference: asyncio holds tasks weakly, and a collected task
        # would silently stop reading commands.
        self._reader = asyncio.ensure_future(self.read_commands())

    def on_message(self, msg):
        emit({"event": "message", "xml": str(msg)})

    def on_iq(self, iq):
        # Answers to the test's requests, and roster pushes from the server.
        if iq["type"] in ("result", "error", "set"):
            emit({"event": "iq", "xml": str(iq)})

    def on_presence(self, presence):
        emit({"event": "presence", "xml": str(presence)})

    async def read_commands(self):
        try:
            await self._read_commands()
        except Exception:  # a test helper must say why it stopped
            import traceback
            traceback.print_exc()
            raise

    async def _read_commands(self):
        loop = asyncio.get_event_loop()
        # Hostile tests send stanzas of megabytes on one line.
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            if cmd["op"] == "raw":
                self.send_raw(cmd["xml"])
                emit({"event": "sent"})
            elif cmd["op"] == "join":
                # Registered only when a test joins a room: its handlers
                # choke on the malformed JIDs the hostile tests send.
                if "xep_0045" not in self.plugin:
                    self.register_plugin("xep_0045")
                try:
                    await self.plugin["xep_0045"].join_muc_wait(
                        cmd["room"], cmd["nick"], timeout=15
                    )
                    emit({"event": "joined"})
                except Exception as e:  # the test says what went wrong
                    emit({"event": "join_failed", "error": repr(e)})
            elif cmd["op"] == "quit":
                break
        self.disconnect()


def main():
    jid, password, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    user = User(jid, password)
    # Subscription requests are answered by the test, not automatically.
    user.roster.auto_authorize = None
    user.roster.auto_subscribe = False
    user.connect(address=("127.0.0.1", port), force_starttls=False, disable_starttls=True)
    user.process(forever=False)


if __name__ == "__main__":
    main()
