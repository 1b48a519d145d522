"""A local HTTP(S) proxy that lets TensorFlow's GCS filesystem talk to fake-gcs-server.

TensorFlow has no endpoint setting for GCS: it always calls https://www.googleapis.com and
https://storage.googleapis.com. With `https_proxy` pointing here, libcurl sends
`CONNECT storage.googleapis.com:443`; this proxy answers it, terminates TLS with a certificate for
*.googleapis.com signed by a test CA (the client trusts it through CURL_CA_BUNDLE), reads the
plain HTTP requests inside the tunnel and forwards them to the emulator over http. Plain
`http://` requests (absolute-form, as proxies receive them) are forwarded the same way.

Only *.googleapis.com and the emulator's own address are served; anything else gets 403, so a
test can never reach the outside world through it. Run as a script in its own process (the
emulator fixture does that), so an in-process TensorFlow call that holds the GIL cannot stall it:

    python tests/gcs/tls_proxy.py --upstream http://127.0.0.1:PORT --cert leaf.pem --key key.pem

It prints `PORT <n>` once listening. Why each rewrite is needed: docs/storage-testing.md.
"""
import argparse
import http.client
import http.server
import os
import socketserver
import ssl
import sys
import urllib.parse

# Hop-by-hop headers are never forwarded; Content-Length is recomputed. Dropping
# Transfer-Encoding matters: TensorFlow sends `Transfer-Encoding: identity`, which
# fake-gcs-server (Go's net/http) rejects with 501.
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
    "te", "trailer", "transfer-encoding", "upgrade", "expect", "host", "content-length",
}
_SERVED_SUFFIX = ".googleapis.com"


class _ProxyServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, upstream, tls_context):
        super().__init__(address, _ProxyHandler)
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port
        self.upstream_netloc = parsed.netloc
        self.tls_context = tls_context

    def serves(self, host):
        """True for the hosts TensorFlow calls and for the emulator itself (its upload URLs)."""
        host = host.lower()
        return host.endswith(_SERVED_SUFFIX) or host == "googleapis.com" or host in (
            self.upstream_netloc, self.upstream_host)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; also answers `Expect: 100-continue`
    timeout = 120
    tunnel_host = None  # set on the handler that serves the inside of a CONNECT tunnel

    def log_message(self, fmt, *args):  # quiet unless asked: T0_TEST_GCS_PROXY_LOG=1
        if os.environ.get("T0_TEST_GCS_PROXY_LOG") == "1":
            sys.stderr.write(f"tls_proxy {self.tunnel_host or '-'} {fmt % args}\n")

    def do_CONNECT(self):
        host = self.path.rsplit(":", 1)[0]
        if not self.server.serves(host):
            self.send_error(403, f"test proxy serves *.googleapis.com only, not {host}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tls = self.server.tls_context.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        tunnel = type("_TunnelHandler", (_ProxyHandler,), {"tunnel_host": host})
        tunnel(tls, self.client_address, self.server)  # serves every request in the tunnel
        self.close_connection = True

    def _forward(self):
        target = urllib.parse.urlsplit(self.path)
        if target.scheme:  # absolute-form: a plain http:// request sent to the proxy
            if not self.server.serves(target.hostname or ""):
                self.send_error(403, f"test proxy serves *.googleapis.com only, not {target.netloc}")
                return
            path = urllib.parse.urlunsplit(("", "", target.path, target.query, ""))
        else:
            path = self.path
        if self.headers.get("Transfer-Encoding"):
            self.log_message("%s %s with Transfer-Encoding: %s (dropped)", self.command, path,
                             self.headers["Transfer-Encoding"])
        body = self._read_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        # Keep the Host the client asked for: fake-gcs-server serves path-style downloads
        # (GET /bucket/object) only for Host storage.googleapis.com (its -public-host).
        headers["Host"] = self.tunnel_host or target.netloc or self.server.upstream_netloc
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        try:
            conn = http.client.HTTPConnection(
                self.server.upstream_host, self.server.upstream_port, timeout=120)
            conn.request(self.command, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            conn.close()
        except OSError as exc:
            self.send_error(502, f"emulator unreachable: {exc}")
            return
        self._reply(resp, payload)

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, resp, payload):
        self.send_response(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() in _HOP_BY_HOP:
                continue
            self.send_header(key, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
        elif resp.status >= 200 and resp.status not in (204, 304):
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


def serve(upstream, cert, key, port=0):
    """Listen on 127.0.0.1:port (0: a free one), print `PORT <n>`, forward until killed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _ProxyServer(("127.0.0.1", port), upstream, context)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="emulator URL, e.g. http://127.0.0.1:4443")
    parser.add_argument("--cert", required=True, help="PEM certificate for *.googleapis.com")
    parser.add_argument("--key", required=True, help="PEM private key of that certificate")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        serve(args.upstream, args.cert, args.key, args.port)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
