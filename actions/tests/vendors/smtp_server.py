#!/usr/bin/env python3
"""A real SMTP server for the `email.send` tests (aiosmtpd; `pip install aiosmtpd`).

    python3 smtp_server.py --port 0 --out messages.jsonl [--user U --password P] [--starttls DIR]

Listens on 127.0.0.1, prints the port it listens on as the first line of stdout once it
accepts connections, and appends every accepted message to --out as one JSON line
`{"mail_from", "rcpt_tos", "data"}` (data: the raw message as received, decoded as UTF-8).

Answers by recipient, so a test picks the server's behaviour with the address it sends to:
- `busy@…`   → `451 4.3.0 Try again later` (at RCPT)
- `nobody@…` → `550 5.1.1 No such user` (at RCPT)
- `drop@…`   → the message is read in full, then the connection is closed without a reply
               (the client cannot know whether it was accepted)

--user/--password require AUTH (PLAIN or LOGIN) before MAIL; plain text is allowed
(`auth_require_tls=False`) because the server only listens on loopback.
--starttls DIR offers STARTTLS with a self-signed certificate generated into DIR (openssl CLI).
"""

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, out):
        self.out = out

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.lower()
        if local.startswith("busy@"):
            return "451 4.3.0 Try again later"
        if local.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(r.lower().startswith("drop@") for r in envelope.rcpt_tos):
            # The whole message arrived; vanish before answering.
            server.transport.close()
            return "421 4.3.0 closing"  # never reaches the client
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.original_content.decode("utf-8", errors="replace"),
        }
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 2.0.0 Ok: queued as 4242"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)

    return authenticate


def self_signed_context(directory):
    import ssl

    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def main():
    # Plain-text AUTH on loopback is the point here; keep the test output quiet about it.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--starttls", metavar="DIR")
    args = parser.parse_args()

    handler = Handler(args.out)
    options = {"hostname": "localhost", "auth_require_tls": False}
    if args.user is not None:
        options["authenticator"] = authenticator_for(args.user, args.password or "")
        options["auth_required"] = True
    if args.starttls:
        options["tls_context"] = self_signed_context(args.starttls)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, **options), "127.0.0.1", args.port)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
