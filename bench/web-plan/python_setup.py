"""Set up the Python peers for bench/web-plan.sh (stdlib only).

Adds one image to the Python withcache's catalog, downloads it from the
loopback origin, then binds the benchmark machine in the Python bty-web
(bty-flash-always, same image, same serial) so its plan is a flash plan.
"""
import hashlib
import http.cookiejar
import json
import sys
import time
import urllib.parse
import urllib.request

wc, pyweb, origin, mac, serial, pw = sys.argv[1:7]
src = f"{origin}/bench.img.gz"


def call(opener, method, url, body=None, headers=None, form=None):
    data = None
    h = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        h["content-type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        h["content-type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    with opener.open(req, timeout=30) as r:
        return r.status, r.read()


plain = urllib.request.build_opener()
bearer = {"authorization": f"Bearer {pw}"}
try:
    call(plain, "POST", f"{wc}/catalog/entries",
         {"name": "bench", "src": src, "format": "img.gz"}, bearer)
except urllib.error.HTTPError as e:
    if e.code != 409:
        raise
call(plain, "POST", f"{wc}/catalog/entries/bench/download", None, bearer)
for _ in range(300):
    _, body = call(plain, "GET", f"{wc}/catalog")
    if any(e.get("name") == "bench" for e in json.loads(body)["entries"]):
        break
    time.sleep(0.1)
else:
    sys.exit("withcache never listed the downloaded entry")

# Python bty-web: log in (session cookie), refresh its catalog, bind.
jar = http.cookiejar.CookieJar()
web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
call(web, "POST", f"{pyweb}/ui/login", form={"password": pw})
call(web, "POST", f"{pyweb}/admin/withcache/refresh")
ref = hashlib.sha256(src.encode()).hexdigest()
call(web, "PUT", f"{pyweb}/machines/{mac}",
     {"bty_image_ref": ref, "boot_mode": "bty-flash-always", "target_disk_serial": serial})
_, plan = call(plain, "GET", f"{pyweb}/pxe/{mac}/plan")
plan = json.loads(plan)
if plan.get("mode") != "flash":
    sys.exit(f"Python bty-web plan is not a flash plan: {plan}")
print(json.dumps(plan))
