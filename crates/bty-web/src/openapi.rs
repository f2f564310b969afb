//! `GET /api/openapi.json`: a hand-written OpenAPI 3.1 document. Written by
//! hand rather than derived (utoipa) to keep compile times down; the
//! `openapi_lists_every_route` test keeps it in step with the router.

use serde_json::{json, Value};

fn op(summary: &str, tag: &str, auth: bool, responses: Value) -> Value {
    let mut o = json!({"summary": summary, "tags": [tag], "responses": responses});
    if let (false, Some(o)) = (auth, o.as_object_mut()) {
        o.insert("security".into(), json!([]));
    }
    o
}

fn mac_param() -> Value {
    json!([{"name": "mac", "in": "path", "required": true,
            "schema": {"type": "string"}, "description": "aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff"}])
}

/// Every documented `(method, path)`.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/pxe-bootstrap.ipxe"),
    ("get", "/pxe/{mac}"),
    ("get", "/pxe/{mac}/plan"),
    ("post", "/pxe/{mac}/progress"),
    ("post", "/pxe/{mac}/done"),
    ("post", "/pxe/{mac}/inventory"),
    ("post", "/pxe/{mac}/status"),
    ("get", "/boot/{name}"),
    ("get", "/grub/grub.cfg"),
    ("get", "/grub/grub.cfg-{mac}"),
    ("get", "/grub/boot/{mac}/{name}"),
    ("get", "/catalog.toml"),
    ("get", "/healthz"),
    ("get", "/version"),
    ("get", "/metrics"),
    ("post", "/api/login"),
    ("post", "/api/logout"),
    ("get", "/api/machines"),
    ("get", "/api/machines/{mac}"),
    ("put", "/api/machines/{mac}"),
    ("delete", "/api/machines/{mac}"),
    ("get", "/api/machines/{mac}/cycles"),
    ("get", "/api/machines/export"),
    ("post", "/api/machines/import"),
    ("get", "/api/images"),
    ("post", "/api/images"),
    ("delete", "/api/images/{name}"),
    ("post", "/api/images/refresh"),
    ("get", "/api/events"),
    ("get", "/api/events/stream"),
    ("get", "/api/settings/dhcp"),
    ("get", "/api/sticks"),
    ("post", "/api/sticks"),
    ("delete", "/api/sticks/{id}"),
    ("get", "/api/backups"),
    ("post", "/api/backups"),
    ("get", "/api/backups/{name}"),
    ("get", "/stick/catalog"),
    ("post", "/stick/flash"),
    ("get", "/api/openapi.json"),
];

/// The document.
pub fn document() -> Value {
    let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let ok_json = |d: &str| json!({"description": d, "content": {"application/json": {}}});
    let ipxe = json!({"description": "iPXE script", "content": {"text/plain": {}}});
    let mut paths = serde_json::Map::new();
    let mut add = |path: &str, method: &str, mut v: Value| {
        if let (true, Some(v)) = (path.contains("{mac}"), v.as_object_mut()) {
            v.insert("parameters".into(), mac_param());
        }
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|o| o.insert(method.to_string(), v));
    };
    add(
        "/pxe-bootstrap.ipxe",
        "get",
        op(
            "Chain to the per-MAC script of the NIC that booted",
            "pxe",
            false,
            json!({"200": ipxe, "400": err}),
        ),
    );
    add("/pxe/{mac}", "get", op("Per-MAC iPXE script: flash chain, inventory chain, local disk or parked; registers unknown MACs", "pxe", false, json!({"200": ipxe, "400": err})));
    add(
        "/pxe/{mac}/plan",
        "get",
        op(
            "The agent's plan (bty_proto::plan::Plan); a flash plan only once the cycle's kernel was fetched (409 before) and only to that address (403)",
            "pxe",
            false,
            json!({"200": ok_json("plan"), "400": err, "403": err, "409": err, "429": err}),
        ),
    );
    add(
        "/pxe/{mac}/progress",
        "post",
        op(
            "Progress of the current cycle; needs its token, from the address that booted it",
            "pxe",
            false,
            json!({"200": ok_json("ReportAck"), "400": err, "403": err, "404": err, "409": err, "413": err}),
        ),
    );
    add("/pxe/{mac}/done", "post", op("End of the current cycle; needs its token, from the address that booted it; a replay is acknowledged with recorded=false", "pxe", false, json!({"200": ok_json("ReportAck"), "400": err, "403": err, "404": err, "409": err, "413": err})));
    add(
        "/pxe/{mac}/inventory",
        "post",
        op(
            "Hardware inventory from the agent",
            "pxe",
            false,
            json!({"204": {"description": "stored"}, "400": err, "404": err, "413": err}),
        ),
    );
    add(
        "/pxe/{mac}/status",
        "post",
        op(
            "Python live env terminal report {status: failed, reason}; no token, so off unless [pxe] legacy_status and never completes a cycle (done: 409)",
            "pxe",
            false,
            json!({"204": {"description": "applied"}, "400": err, "403": err, "404": err, "409": err}),
        ),
    );
    add("/boot/{name}", "get", op("Boot artifact; HEAD and single Range supported; ?mac= marks the cycle booted; iPXE asking for an iPXE bootfile gets a chain script", "boot", false, json!({"200": {"description": "file"}, "206": {"description": "range"}, "400": err, "404": err, "416": err})));
    let grub = json!({"description": "GRUB config", "content": {"text/plain": {}}});
    let relay = "Relayed from TFTP by bty-tftp: with x-bty-relay-key equal to [pxe] relay_key, \
                 x-bty-relay-client is the machine's address (403 when the client header comes \
                 without the right key); without them, the HTTP peer";
    add("/grub/grub.cfg", "get", op("The Secure Boot chain's GRUB config, the same for every machine: it sources grub.cfg-$net_default_mac, then reboots", "grub", false, json!({"200": grub})));
    add("/grub/grub.cfg-{mac}", "get", op(&format!("Per-MAC GRUB config from the same decision as GET /pxe/{{mac}} (flash, inventory, local chainload, parked); registers unknown MACs; a browser gets the preview. {relay}"), "grub", false, json!({"200": grub, "400": err, "403": err, "404": err})));
    add("/grub/boot/{mac}/{name}", "get", op(&format!("Boot artifact for GRUB, as GET /boot/{{name}}?mac={{mac}}: HEAD and single Range; marks the cycle booted. {relay}"), "grub", false, json!({"200": {"description": "file"}, "206": {"description": "range"}, "400": err, "403": err, "404": err, "416": err})));
    add(
        "/catalog.toml",
        "get",
        op(
            "The image catalog for clients (withcache URLs when configured)",
            "images",
            false,
            json!({"200": {"description": "catalog", "content": {"application/toml": {}}}}),
        ),
    );
    add(
        "/healthz",
        "get",
        op(
            "Liveness",
            "meta",
            false,
            json!({"200": ok_json("{status: ok}")}),
        ),
    );
    add(
        "/version",
        "get",
        op(
            "Versions",
            "meta",
            false,
            json!({"200": ok_json("versions")}),
        ),
    );
    add(
        "/metrics",
        "get",
        op(
            "Prometheus metrics",
            "meta",
            false,
            json!({"200": {"description": "text exposition"}}),
        ),
    );
    add(
        "/api/login",
        "post",
        op(
            "Log in with {user?, password}; sets the session cookie",
            "auth",
            false,
            json!({"204": {"description": "logged in"}, "401": err, "403": err, "429": err}),
        ),
    );
    add(
        "/api/logout",
        "post",
        op(
            "Clear the session cookie",
            "auth",
            false,
            json!({"204": {"description": "logged out"}}),
        ),
    );
    add(
        "/api/machines",
        "get",
        op(
            "All machines with their current cycle",
            "machines",
            true,
            json!({"200": ok_json("machines"), "401": err}),
        ),
    );
    add(
        "/api/machines/{mac}",
        "get",
        op(
            "One machine",
            "machines",
            true,
            json!({"200": ok_json("machine"), "404": err, "401": err}),
        ),
    );
    add("/api/machines/{mac}", "put", op("Create or fully replace {boot_mode, image, target_disk_serial, sanboot_drive, labels, name}; a change of mode, image or target re-arms; any PUT un-parks", "machines", true, json!({"200": ok_json("machine"), "201": ok_json("created"), "400": err, "401": err, "403": err, "413": err})));
    add(
        "/api/machines/{mac}",
        "delete",
        op(
            "Delete a machine and its cycles (events are kept)",
            "machines",
            true,
            json!({"204": {"description": "deleted"}, "404": err, "401": err}),
        ),
    );
    add(
        "/api/machines/{mac}/cycles",
        "get",
        op(
            "Flash cycle history, newest first",
            "machines",
            true,
            json!({"200": ok_json("cycles"), "401": err}),
        ),
    );
    add(
        "/api/machines/export",
        "get",
        op(
            "Every machine as ?format=csv (default; header mac,name,boot_mode,image,\
             target_disk_serial,sanboot_drive,labels; labels separated by ';') or json \
             (an array of objects with those keys), ordered by MAC",
            "machines",
            true,
            json!({"200": {"description": "text/csv or application/json"}, "400": err, "401": err}),
        ),
    );
    add(
        "/api/machines/import",
        "post",
        op(
            "Create or update the machines a text/csv or application/json body lists (the \
             export's format, at most 8 MiB), each row checked as PUT /api/machines/{mac} \
             checks it; all in one transaction, or nothing. ?dry_run=true checks and plans \
             only. Answer: {applied, created, updated, unchanged, rows: [{line, mac, action: \
             create|update|unchanged|invalid, errors: [{field, message}]}]}; 422 with the \
             same body when a row has errors",
            "machines",
            true,
            json!({"200": ok_json("import report"), "401": err, "403": err, "413": err, "415": err, "422": ok_json("import report, nothing written")}),
        ),
    );
    add(
        "/api/images",
        "get",
        op(
            "Catalog entries and the state of each source",
            "images",
            true,
            json!({"200": ok_json("images"), "401": err}),
        ),
    );
    add(
        "/api/images",
        "post",
        json!({
            "summary": "Add an image: {name, url, sha256?, size?, format?}. Every field is checked first \
                        (400 names the field; nothing is saved anywhere); then the entry goes into \
                        withcache's catalog (with [withcache] token) and its download starts there, \
                        and the catalog is re-read so machines can be assigned it at once. 409: no \
                        withcache is configured (images then come from the static catalog file). \
                        502: withcache unreachable or refused bty-web's token (nothing saved).",
            "tags": ["images"],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewImage"}}}},
            "responses": {"201": ok_json("the image as GET /api/images lists it"), "400": err, "401": err, "403": err, "409": err, "502": err}
        }),
    );
    add(
        "/api/images/{name}",
        "delete",
        json!({
            "summary": "Remove an image added through withcache (its cached bytes stay until evicted). \
                        An entry of the static catalog file is refused with 409 naming the file.",
            "tags": ["images"],
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"204": {"description": "removed"}, "401": err, "403": err, "404": err, "409": err, "502": err}
        }),
    );
    add(
        "/api/images/refresh",
        "post",
        op(
            "Re-read the catalog file and poll withcache now",
            "images",
            true,
            json!({"200": ok_json("images"), "401": err}),
        ),
    );
    add(
        "/api/events",
        "get",
        op(
            "Event log page, newest first (?mac, ?kind, ?before_id, ?limit)",
            "events",
            true,
            json!({"200": ok_json("{events, next_before_id}"), "400": err, "401": err}),
        ),
    );
    add(
        "/api/events/stream",
        "get",
        op(
            "Server-sent events: event, progress, machine, lagged; keep-alive comments",
            "events",
            true,
            json!({"200": {"description": "stream", "content": {"text/event-stream": {}}}, "401": err}),
        ),
    );
    add(
        "/api/settings/dhcp",
        "get",
        op(
            "DHCP options (60/66/67, iPXE user-class rules, dnsmasq/ISC/Kea snippets) for this host",
            "settings",
            true,
            json!({"200": ok_json("DhcpGuidance"), "401": err}),
        ),
    );
    add(
        "/api/sticks",
        "post",
        json!({
            "summary": "Mint a USB-stick key for `bty-lab usb build --server`: {label} (1-80 printable \
                        characters). 201 {id, label, key, created_at}: the key (btystick_ + 32 random \
                        bytes, base64url) is shown only in this answer; bty-web keeps its sha256.",
            "tags": ["sticks"],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewStick"}}}},
            "responses": {"201": ok_json("{id, label, key, created_at}"), "400": err, "401": err, "403": err}
        }),
    );
    add(
        "/api/sticks",
        "get",
        op(
            "Stick keys [{id, label, created_at, last_used_at, last_ip, revoked_at}], never the keys",
            "sticks",
            true,
            json!({"200": ok_json("sticks"), "401": err}),
        ),
    );
    add(
        "/api/sticks/{id}",
        "delete",
        json!({
            "summary": "Revoke a stick key: from now on it gets 401 (revoking twice keeps the first date)",
            "tags": ["sticks"],
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
            "responses": {"204": {"description": "revoked"}, "401": err, "403": err, "404": err}
        }),
    );
    add(
        "/api/backups",
        "get",
        op(
            "bty-web's backups: {schedule: {every, off, keep, dir}, archives: [{name, created, size}] \
             newest first, last_failure: {at, reason} | null, last_success, list_error}. `off` says \
             why there is no schedule (every = \"off\", or PostgreSQL: back up with pg_dump)",
            "backups",
            true,
            json!({"200": ok_json("backups"), "401": err}),
        ),
    );
    add(
        "/api/backups",
        "post",
        op(
            "Back up now: writes bty-<YYYYMMDDTHHMMSSZ>.tar.zst to [backup] dir and prunes to [backup] \
             keep; 201 {name, created, size}. 409 on PostgreSQL; 500 with the reason when the archive \
             could not be written (also a backup.failed event)",
            "backups",
            true,
            json!({"201": ok_json("{name, created, size}"), "401": err, "403": err, "409": err, "500": err}),
        ),
    );
    add(
        "/api/backups/{name}",
        "get",
        json!({
            "summary": "Download an archive GET /api/backups lists (Content-Disposition: attachment); \
                        any other name is 404. Check it with bty-lab restore, which verifies first.",
            "tags": ["backups"],
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^bty-[0-9]{8}T[0-9]{6}Z\\.tar\\.zst$"}}],
            "responses": {"200": {"description": "the archive", "content": {"application/zstd": {}}}, "401": err, "404": err}
        }),
    );
    add(
        "/stick/catalog",
        "get",
        json!({
            "summary": "The measured images (bty_proto::stick::ServerCatalog) with the URLs a plan gives; \
                        needs a stick key (Authorization: Bearer btystick_...; 401 without a valid one); \
                        a browser gets 403",
            "tags": ["stick"],
            "security": [{"stick": []}],
            "responses": {"200": ok_json("ServerCatalog"), "400": err, "401": err, "403": err}
        }),
    );
    add(
        "/stick/flash",
        "post",
        json!({
            "summary": "A stick's wizard starts a flash (bty_proto::stick::FlashStart): the first registered \
                        MAC gets a stick cycle (FlashStarted: token and report URLs, reports only from this \
                        address); none registered: 404, nothing stored. Needs a stick key (401); a browser \
                        gets 403. A stick cycle never changes the machine's PXE boot decision.",
            "tags": ["stick"],
            "security": [{"stick": []}],
            "responses": {"200": ok_json("FlashStarted"), "400": err, "401": err, "403": err, "404": err}
        }),
    );
    add(
        "/api/openapi.json",
        "get",
        op(
            "This document",
            "meta",
            false,
            json!({"200": ok_json("OpenAPI")}),
        ),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "bty-web", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "NewStick": {
                    "type": "object",
                    "required": ["label"],
                    "additionalProperties": false,
                    "properties": {
                        "label": {"type": "string", "minLength": 1, "maxLength": 80, "description": "printable characters, not only spaces"}
                    }
                },
                "NewImage": {
                    "type": "object",
                    "required": ["name", "url"],
                    "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string", "description": "1-128 of A-Z a-z 0-9 . _ - +, starting with a letter or digit; unused in both catalogs"},
                        "url": {"type": "string", "description": "http(s) origin URL (alias: src)"},
                        "sha256": {"type": "string", "description": "exactly 64 hex digits"},
                        "size": {"type": "integer", "minimum": 1, "description": "bytes"},
                        "format": {"type": "string", "enum": ["img", "img.gz", "img.xz", "img.zst", "img.bz2", "qcow2"], "description": "default: guessed from the URL's file name"}
                    }
                }
            },
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": crate::COOKIE_NAME},
                "stick": {"type": "http", "scheme": "bearer", "description": "a stick key from POST /api/sticks"}
            }
        },
        "security": [{"basic": []}, {"cookie": []}]
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_lists_every_route() {
        let d = super::document();
        for (m, p) in super::ROUTES {
            assert!(d["paths"][p][m].is_object(), "{m} {p} missing");
        }
    }
}
