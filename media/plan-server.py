#!/usr/bin/env python3
"""A stand-in for bty-web and withcache for media/boot-test.sh: serves one
flash plan for one MAC, the image (with Range), and records the agent's
reports as JSON lines in --log. Development check only; the real stack's
end-to-end tests use bty-web."""
import argparse, hashlib, json, os, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

ap = argparse.ArgumentParser()
ap.add_argument("--listen", default="127.0.0.1:0")
ap.add_argument("--image", required=True)
ap.add_argument("--format", default="img")
ap.add_argument("--serial", default="BTYTEST")
ap.add_argument("--mac", required=True)
ap.add_argument("--log", required=True)
ap.add_argument("--advertise", required=True,
                help="base URL as the agent sees us; PORT is replaced by the bound port, e.g. http://10.0.2.2:PORT")
ap.add_argument("--port-file")
ap.add_argument("--image-url", help="put this URL in the plan instead of serving the image here")
ap.add_argument("--always", action="store_true", help="hand out the flash plan on every request")
a = ap.parse_args()

if a.image_url:
    h, size = hashlib.sha256(), 0
    with open(a.image, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
            size += len(chunk)
    sha, data = h.hexdigest(), b""
else:
    data = open(a.image, "rb").read()
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
lock = threading.Lock()
served_plan = []

def record(kind, body):
    with lock, open(a.log, "a") as f:
        f.write(json.dumps({"kind": kind, "body": body}) + "\n")

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def send(self, code, body=b"", ctype="application/json", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def do_HEAD(self):
        self.do_GET()
    def do_GET(self):
        pxe = "/pxe/%s/" % a.mac
        if self.path == pxe + "plan":
            if served_plan and not a.always:  # after one flash, boot the disk
                return self.send(200, json.dumps({"version": 1, "mode": "exit"}).encode())
            served_plan.append(1)
            plan = {"version": 1, "mode": "flash", "cycle": "c1", "token": "t1",
                    "image": {"url": a.image_url or a.advertise + "/img/disk", "sha256": sha, "size": size,
                              "format": a.format, "name": os.path.basename(a.image)},
                    "target": {"serial": a.serial},
                    "report": {"progress": a.advertise + pxe + "progress", "done": a.advertise + pxe + "done"}}
            return self.send(200, json.dumps(plan).encode())
        if self.path == "/img/disk":
            rng = self.headers.get("Range")
            start, end = 0, len(data)
            if rng and rng.startswith("bytes="):
                s, e = rng[6:].split("-")
                if s == "":
                    start = max(0, len(data) - int(e))
                else:
                    start, end = int(s), (int(e) + 1 if e else len(data))
                return self.send(206, data[start:end], "application/octet-stream",
                                 [("Content-Range", "bytes %d-%d/%d" % (start, end - 1, len(data)))])
            return self.send(200, data, "application/octet-stream", [("Accept-Ranges", "bytes")])
        return self.send(404, b'{"error":"not found"}')
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(n) or b"null")
        kind = self.path.rsplit("/", 1)[-1]
        record(kind, body)
        self.send(200 if kind == "done" else 204, b'{"recorded":true,"state":"done"}' if kind == "done" else b"")

host, port = a.listen.rsplit(":", 1)
srv = ThreadingHTTPServer((host, int(port)), H)
a.advertise = a.advertise.replace("PORT", str(srv.server_address[1]))
if a.port_file:
    open(a.port_file, "w").write(str(srv.server_address[1]))
srv.serve_forever()
