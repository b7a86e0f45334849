"""A stand-in for the Hugging Face Hub's HTTP API: just what `create_repo`, `create_branch` and `upload_folder` use.

The Hub cannot be reached from the tests, so this small server plays it on 127.0.0.1, in a
thread of the test process, and records every request. Point huggingface_hub at it with
`HF_ENDPOINT=server.url` (read when huggingface_hub is imported, so in a fresh process) and
`HF_HUB_DISABLE_XET=1`: the Xet storage protocol is a Rust client's business, while the
git-LFS batch protocol, which huggingface_hub uses without hf_xet, is plain HTTP.

    with HubStub(token="hf_test") as hub:
        ...run `vlfactory publish` with HF_ENDPOINT=hub.url and HF_TOKEN=hf_test...
        hub.files["README.md"]          # bytes of every file on main after the commits
        hub.refs["dev"], hub.refs["refs/pr/1"]   # the files of a branch, of a pull request
        hub.commits[-1].summary         # each commit: revision, summary, create_pr, operations
        [c.path for c in hub.calls]     # every request, with its Authorization header

Endpoints (what huggingface_hub 2.x calls, read from its hf_api.py, _commit_api.py, lfs.py):
    GET  /api/agent-harnesses                         public, no token: huggingface_hub's agent detection
    GET  /api/whoami-v2                               the token's owner
    POST /api/repos/create                            {"name", "organization", "type", "visibility"}
    POST /api/validate-yaml                           the card's front matter must parse
    POST /api/datasets/ORG/NAME/branch/BRANCH         a branch from main (409 if it exists, as the Hub)
    GET  /api/datasets/ORG/NAME/tree/REV              the files at REV (for delete_patterns); 404 if unknown
    POST /api/datasets/ORG/NAME/preupload/REV         upload mode per file: lfs for Parquet, else regular
    POST /datasets/ORG/NAME.git/info/lfs/objects/batch   where to PUT each LFS object
    PUT  /lfs/OID                                     public: the object's bytes (like a signed storage URL)
    POST /api/datasets/ORG/NAME/commit/REV            ndjson: header, file (base64), lfsFile (oid), deletedFile;
                                                      `?create_pr=1` opens refs/pr/N from REV and commits there
    GET  /api/datasets/ORG/NAME[/revision/REV]        repo info: its commit sha and files (`hf download`)
    HEAD, GET /datasets/ORG/NAME/resolve/REV/PATH     a file's bytes, with X-Repo-Commit and ETag (hf_hub_download)
REV is URL-quoted by huggingface_hub (`refs%2Fpr%2F1`), or a ref's commit sha (what `hf download` resolves to).
Every request but those two public ones must carry `Authorization: Bearer <token>`, else 401 as the Hub does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import yaml


@dataclass
class Call:
    method: str
    path: str
    authorization: str | None
    body: bytes


@dataclass
class Commit:
    revision: str          # the ref it landed on (refs/pr/N for a pull request)
    summary: str
    description: str
    create_pr: bool
    ops: list[dict]        # the ndjson lines after the header


class HubStub:
    def __init__(self, token: str):
        self.token = token
        self.calls: list[Call] = []
        self.repos: dict[str, dict] = {}        # repo id -> the create payload
        self.refs: dict[str, dict[str, bytes]] = {"main": {}}  # ref -> path -> bytes, after all commits
        self.commits: list[Commit] = []
        self.lfs: dict[str, bytes] = {}         # oid -> bytes
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def files(self) -> dict[str, bytes]:
        """The files on main."""
        return self.refs["main"]

    def __enter__(self) -> "HubStub":
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # ---- the API ---------------------------------------------------------------------

    def sha(self, ref: str) -> str:
        """A ref's commit id: a digest of its files."""
        return hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(b).hexdigest()) for p, b in self.refs[ref].items()))
                            .encode()).hexdigest()

    def ref(self, revision: str) -> str | None:
        """The ref a revision names: a ref name, or the sha of one."""
        if revision in self.refs:
            return revision
        return next((r for r in self.refs if self.sha(r) == revision), None)

    def answer(self, method: str, path: str, auth: str | None, body: bytes,
               query: dict[str, list[str]] | None = None) -> tuple[int, object]:
        if path.startswith("/lfs/"):
            oid = path.rsplit("/", 1)[1]
            if hashlib.sha256(body).hexdigest() != oid:
                return 400, {"error": "the bytes do not match the oid"}
            self.lfs[oid] = body
            return 200, {}
        if path == "/api/agent-harnesses":  # public: huggingface_hub fetches it for its user agent
            return 200, {"standardEnvVars": [], "harnesses": {}}
        if auth != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}
        if path == "/api/whoami-v2":
            return 200, {"type": "user", "name": "tester", "auth": {"type": "access_token"}}
        if path == "/api/repos/create":
            req = json.loads(body)
            repo = f"{req['organization']}/{req['name']}"
            self.repos[repo] = req
            return 200, {"url": f"{self.url}/datasets/{repo}", "name": repo}
        if path == "/api/validate-yaml":
            try:
                yaml.safe_load(json.loads(body)["content"].split("---")[1])
            except yaml.YAMLError as e:
                return 400, {"errors": [{"message": f"the front matter does not parse: {e}"}]}
            return 200, {"errors": [], "warnings": []}
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/branch/([^/]+)", path):
            branch = unquote(m.group(2))
            if branch in self.refs:
                return 409, {"error": f"Reference already exists: refs/heads/{branch}"}
            start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
            self.refs[branch] = dict(self.refs[start])
            return 200, {}
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            ref = self.ref(unquote(m.group(2) or "main"))
            if ref is None:
                return 404, {"error": "Invalid rev id"}
            return 200, {"id": m.group(1), "sha": self.sha(ref), "private": False,
                         "siblings": [{"rfilename": p} for p in sorted(self.refs[ref])]}
        if m := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            ref = self.ref(unquote(m.group(2)))
            data = self.refs[ref].get(unquote(m.group(3))) if ref else None
            if data is None:
                return 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}
            return 200, data, {"X-Repo-Commit": self.sha(ref), "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/(tree|preupload|commit)/([^/]+)", path):
            revision = self.ref(unquote(m.group(3)))
            if revision is None:
                return 404, {"error": f"Invalid rev id: {unquote(m.group(3))}"}
            if m.group(2) == "tree":
                return 200, [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                             for p, b in sorted(self.refs[revision].items())]
            if m.group(2) == "preupload":
                files = json.loads(body)["files"]
                return 200, {"files": [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".parquet")
                                        else "regular", "shouldIgnore": False, "oid": None} for f in files]}
            return self.commit(m.group(1), revision, body, "1" in (query or {}).get("create_pr", []))
        if m := re.fullmatch(r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
            objects = json.loads(body)["objects"]
            return 200, {"transfer": "basic", "objects": [
                {"oid": o["oid"], "size": o["size"], "authenticated": True,
                 "actions": {"upload": {"href": f"{self.url}/lfs/{o['oid']}"}}} for o in objects]}
        return 404, {"error": f"the stub does not implement {method} {path}"}

    def commit(self, repo: str, revision: str, body: bytes, create_pr: bool) -> tuple[int, object]:
        header, *ops = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = dict(self.refs[revision])
        for op in ops:
            value = op["value"]
            if op["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif op["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 400, {"error": f"LFS object {value['oid']} was never uploaded"}
                files[value["path"]] = self.lfs[value["oid"]]
            elif op["key"] == "deletedFile":
                files.pop(value["path"], None)
        number = sum(ref.startswith("refs/pr/") for ref in self.refs) + 1
        target = f"refs/pr/{number}" if create_pr else revision
        self.refs[target] = files
        self.commits.append(Commit(target, header["value"]["summary"], header["value"].get("description", ""),
                                   create_pr, ops))
        oid = f"{len(self.commits):040x}"
        answer = {"commitUrl": f"{self.url}/datasets/{repo}/commit/{oid}", "commitOid": oid, "success": True}
        if create_pr:
            answer["pullRequestUrl"] = f"{self.url}/datasets/{repo}/discussions/{number}"
        return 200, answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        hub: HubStub = self.server.hub
        body = self._body()
        url = urlparse(self.path)
        path, auth = url.path, self.headers.get("Authorization")
        with hub._lock:
            hub.calls.append(Call(self.command, path, auth, body))
            status, payload, *extra = hub.answer(self.command, path, auth, body, parse_qs(url.query))
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        binary = isinstance(payload, bytes)
        self.send_header("Content-Type", "application/octet-stream" if binary else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra[0] if extra else {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_GET = do_POST = do_PUT = do_HEAD = _serve

    def log_message(self, *args) -> None:
        pass
