"""A small Hub server speaking the protocol huggingface_hub 2.4 uses (model repos only), for offline upload tests.

Modes: "lfs-basic" (one PUT per LFS file), "lfs-multipart" (parts of `chunk_size` bytes), "xet" (LFS content goes to
hf_xet's file-backed CAS at `local://<cas_dir>`; the client must have Xet enabled). See
/work/shared/research/hub-upload.md §1 and §3 for every response shape used here.
"""
import base64
import hashlib
import json
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

MODES = ("lfs-basic", "lfs-multipart", "xet")
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".npy", ".h5")
BAD_CREDENTIALS = "Invalid credentials in Authorization header"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Entry:
    size: int
    sha256: str
    lfs: bool
    data: bytes | None  # None: an LFS file whose bytes live in the Xet CAS

    @property
    def git_oid(self) -> str:
        return git_sha1(lfs_pointer(self.sha256, self.size)) if self.lfs else git_sha1(self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    sha: str
    files: dict[str, Entry]


@dataclass
class Repo:
    private: bool
    branches: dict[str, list[Commit]] = field(default_factory=dict)

    def find(self, rev: str) -> Commit | None:
        if rev in self.branches:
            return self.branches[rev][-1]
        for commits in self.branches.values():
            for c in commits:
                if c.sha == rev:
                    return c
        return None


class FakeHub:
    """State and routing; the HTTP handler below only parses requests and writes responses."""

    def __init__(self, mode: str, token: str, cas_dir: Path | None = None, chunk_size: int = 5 * 2**20,
                 lfs_threshold: int = 10 * 2**20, read_only_token: str | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "xet" and cas_dir is None:
            raise ValueError("cas_dir is required in xet mode")
        self.mode, self.token, self.cas_dir = mode, token, cas_dir
        self.chunk_size, self.lfs_threshold = chunk_size, lfs_threshold
        self.read_only_token = read_only_token  # a valid token without write access: writes get 403
        self.fail_commits = 0  # refuse this many commits (as a dropped connection would lose them)
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> LFS content
        self.parts: dict[str, dict[int, bytes]] = {}
        self.xet_hashes: dict[str, str] = {}  # sha256 -> Xet file hash, registered by the test
        self.commits: list[tuple[str, str, list[str]]] = []  # (repo_id, branch, paths) per accepted commit
        self.requests: list[tuple[str, str]] = []  # (method, path without query)
        self.auth_headers: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def head_files(self, repo_id: str, rev: str = "main") -> dict[str, Entry]:
        return dict(self.repos[repo_id].branches[rev][-1].files)

    def drop_file(self, repo_id: str, path: str, rev: str = "main") -> None:
        """Simulates an interrupted multi-commit upload: the head loses `path`."""
        with self.lock:
            repo = self.repos[repo_id]
            files = dict(repo.branches[rev][-1].files)
            del files[path]
            repo.branches[rev].append(Commit(secrets.token_hex(20), files))

    # ---------------------------------------------------------------- routing
    def handle(self, method: str, raw_path: str, headers, body: bytes):
        """Returns (status, headers dict, body bytes or JSON-able object)."""
        split = urlsplit(raw_path)
        path, query = split.path, parse_qs(split.query)
        with self.lock:
            self.requests.append((method, path))
            if "authorization" in headers:
                self.auth_headers.append(headers["authorization"])
        auth = headers.get("authorization")
        read_only = self.read_only_token is not None and auth == f"Bearer {self.read_only_token}"
        authed = auth == f"Bearer {self.token}" or read_only
        upload_url = path.startswith("/lfs-upload/")  # presigned semantics: no auth
        if read_only and method != "GET" and method != "HEAD" and path != "/api/validate-yaml":
            return 403, {}, {"error": "You don't have the rights to write to this namespace"}
        if auth is not None and not authed and not upload_url:
            return 401, {}, {"error": BAD_CREDENTIALS}

        if path == "/api/validate-yaml":
            return 200, {}, {"errors": [], "warnings": []}
        if path == "/api/repos/create" and method == "POST":
            return self._create(authed, json.loads(body))
        if upload_url:
            return self._lfs_upload(method, path, body)
        if m := re.fullmatch(r"/lfs-verify/([0-9a-f]{64})", path):
            if not authed:
                return 401, {}, {"error": "authorization required"}
            return (200, {}, {}) if m[1] in self.blobs else (404, {}, {"error": "not stored"})
        if m := re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
            if not authed:
                return 401, {}, {"error": "authorization required"}
            return self._lfs_batch(json.loads(body))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(\w[\w-]*)(?:/(.*))?)?", path):
            repo_id, action, rest = m[1], m[2], m[3]
            repo = self.repos.get(repo_id)
            if repo is None:
                return 404, {"X-Error-Code": "RepoNotFound"}, {"error": f"Repository {repo_id} not found"}
            if (repo.private or action in {"preupload", "commit", "branch", "xet-write-token"}) and not authed:
                return 401, {}, {"error": "authorization required"}
            return self._api(method, repo_id, repo, action, rest, query, body)
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(method, unquote(m[1]), unquote(m[2]), unquote(m[3]), headers, authed)
        return 404, {}, {"error": f"no route for {method} {path}"}

    def _create(self, authed: bool, payload: dict):
        if not authed:
            return 401, {}, {"error": "authorization required"}
        repo_id = f"{payload['organization'] or 'user'}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        with self.lock:
            if repo_id in self.repos:
                return 409, {}, {"error": "You already created this model repo", "url": url}
            # the Hub starts every repo with one commit (holding .gitattributes)
            first = Commit(secrets.token_hex(20), {})
            self.repos[repo_id] = Repo(payload.get("visibility") == "private", {"main": [first]})
        return 200, {}, {"url": url}

    def _api(self, method, repo_id, repo, action, rest, query, body):
        rev = unquote(rest.split("/", 1)[0]) if rest else "main"
        if action == "branch" and method == "POST":
            with self.lock:
                if rev in repo.branches:
                    return 409, {}, {"error": "branch exists"}
                start = repo.find(json.loads(body or b"{}").get("startingPoint") or "main")
                repo.branches[rev] = [Commit(secrets.token_hex(20), dict(start.files))]
            return 200, {}, {}
        commit = repo.find(rev)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, {"error": f"Invalid rev id: {rev}"}
        if action is None or action == "revision":
            return 200, {}, self._info(repo_id, repo, commit, "blobs" in query)
        if action == "preupload":
            return 200, {}, {"files": [self._upload_mode(f, commit) for f in json.loads(body)["files"]]}
        if action == "commit":
            return self._commit(repo_id, repo, rev, body)
        if action == "tree":
            sub = unquote(rest.split("/", 1)[1]) if "/" in rest else ""
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            return 200, {}, self._tree(commit, sub, recursive)
        if action in ("xet-write-token", "xet-read-token"):
            if self.mode != "xet":
                return 404, {}, {"error": "Xet is not enabled on this server"}
            # huggingface_hub reads the headers; hf_xet's own token refresh reads the JSON body
            cas, exp = f"local://{self.cas_dir}", int(time.time()) + 3600
            return 200, {"X-Xet-Cas-Url": cas, "X-Xet-Access-Token": "xet-local", "X-Xet-Token-Expiration": str(exp)}, \
                {"casUrl": cas, "accessToken": "xet-local", "exp": exp}
        return 404, {}, {"error": f"no route for {action}"}

    def _info(self, repo_id, repo, commit, blobs):
        siblings = []
        for path, e in sorted(commit.files.items()):
            s = {"rfilename": path}
            if blobs:
                s |= {"size": e.size, "blobId": e.git_oid}
                if e.lfs:
                    s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
            siblings.append(s)
        return {"id": repo_id, "sha": commit.sha, "private": repo.private, "siblings": siblings,
                "lastModified": "2026-01-01T00:00:00.000Z"}

    def _upload_mode(self, f, commit):
        sample = base64.b64decode(f["sample"])
        lfs = f["size"] >= self.lfs_threshold or f["path"].endswith(LFS_SUFFIXES) or b"\0" in sample
        cur = commit.files.get(f["path"])
        oid = (cur.sha256 if cur.lfs else cur.git_oid) if cur is not None else None
        return {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}

    def _lfs_batch(self, payload):
        objects = []
        for o in payload["objects"]:
            oid, size = o["oid"], o["size"]
            if oid in self.blobs:
                objects.append({"oid": oid, "size": size})  # no actions: already stored
                continue
            upload = {"href": f"{self.url}/lfs-upload/{oid}"}
            if self.mode == "lfs-multipart" and size > self.chunk_size:
                num_parts = math.ceil(size / self.chunk_size)
                upload["header"] = {"chunk_size": str(self.chunk_size)} | {
                    str(k): f"{self.url}/lfs-upload/{oid}/{k}" for k in range(1, num_parts + 1)}
            objects.append({"oid": oid, "size": size,
                            "actions": {"upload": upload, "verify": {"href": f"{self.url}/lfs-verify/{oid}"}}})
        return 200, {}, {"transfer": "basic", "objects": objects}

    def _lfs_upload(self, method, path, body):
        m = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})(?:/(\d+))?", path)
        if m is None:
            return 404, {}, {"error": "bad upload url"}
        oid, part = m[1], m[2]
        if method == "PUT" and part is not None:
            with self.lock:
                self.parts.setdefault(oid, {})[int(part)] = body
            return 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, {}
        if method == "PUT":
            data = body
        elif method == "POST":  # multipart completion
            numbers = [p["partNumber"] for p in json.loads(body)["parts"]]
            stored = self.parts.pop(oid, {})
            if sorted(numbers) != sorted(stored):
                return 400, {}, {"error": "parts missing"}
            data = b"".join(stored[k] for k in sorted(numbers))
        else:
            return 405, {}, {"error": "method not allowed"}
        if hashlib.sha256(data).hexdigest() != oid:
            return 400, {}, {"error": "sha256 mismatch"}
        with self.lock:
            self.blobs[oid] = data
        return 200, {}, {}

    def _commit(self, repo_id, repo, rev, body):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        with self.lock:
            if self.fail_commits > 0:
                self.fail_commits -= 1
                return 409, {}, {"error": "commit interrupted"}
            head = repo.branches[rev][-1]
            parent = header.get("parentCommit")
            if parent and not head.sha.startswith(parent):
                return 412, {}, {"error": "parent commit is not the head"}
            files, paths = dict(head.files), []
            for op in lines[1:]:
                key, v = op["key"], op["value"]
                if key == "file":
                    data = base64.b64decode(v["content"])
                    files[v["path"]] = Entry(len(data), hashlib.sha256(data).hexdigest(), False, data)
                elif key == "lfsFile":
                    if self.mode != "xet" and v["oid"] not in self.blobs:
                        return 400, {}, {"error": f"LFS object {v['oid']} for {v['path']} was never uploaded"}
                    files[v["path"]] = Entry(v["size"], v["oid"], True, self.blobs.get(v["oid"]))
                elif key == "deletedFile":
                    files.pop(v["path"], None)
                elif key == "deletedFolder":
                    files = {p: e for p, e in files.items() if not p.startswith(v["path"].rstrip("/") + "/")}
                paths.append(v["path"])
            sha = secrets.token_hex(20)
            repo.branches[rev].append(Commit(sha, files))
            self.commits.append((repo_id, rev, paths))
        return 200, {}, {"commitUrl": f"{self.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}

    def _tree(self, commit, sub, recursive):
        prefix = sub.rstrip("/") + "/" if sub else ""
        out, dirs = [], set()
        for path, e in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for i in range(1, len(parts) if recursive else min(2, len(parts))):
                dirs.add(prefix + "/".join(parts[:i]))
            if not recursive and len(parts) > 1:
                continue
            item = {"type": "file", "path": path, "size": e.size, "oid": e.git_oid}
            if e.lfs:
                item["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
                if e.sha256 in self.xet_hashes:
                    item["xetHash"] = self.xet_hashes[e.sha256]
            out.append(item)
        out += [{"type": "directory", "path": d, "oid": git_sha1(d.encode())} for d in sorted(dirs)]
        return out

    def _resolve(self, method, repo_id, rev, path, headers, authed):
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authed):
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "repo not found"}
        commit = repo.find(rev)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, {"error": "revision not found"}
        e = commit.files.get(path)
        if e is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit.sha}, {"error": "entry not found"}
        h = {"X-Repo-Commit": commit.sha, "ETag": f'"{e.etag}"', "Accept-Ranges": "bytes"}
        if e.lfs:
            h |= {"X-Linked-Etag": f'"{e.sha256}"', "X-Linked-Size": str(e.size)}
        if e.data is None:  # Xet-backed: the client fetches from the CAS via the read token
            if e.sha256 not in self.xet_hashes:
                return 404, {}, {"error": "xet hash not registered"}
            h |= {"X-Xet-Hash": self.xet_hashes[e.sha256],
                  "X-Xet-Refresh-Route": f"{self.url}/api/models/{repo_id}/xet-read-token/{commit.sha}"}
            return 200, h | {"Content-Length": str(e.size)}, None
        data, status = e.data, 200
        if (rng := re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("range", ""))) is not None:
            start, end = int(rng[1]), int(rng[2]) if rng[2] else len(data) - 1
            data, status = data[start:end + 1], 206
            h["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{e.size}"
        return status, h | {"Content-Length": str(len(data))}, data


def _make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, out_headers, payload = hub.handle(self.command, self.path, headers, body)
            if isinstance(payload, (dict, list)):
                payload = json.dumps(payload).encode()
                out_headers.setdefault("Content-Type", "application/json")
            payload = payload or b""
            self.send_response(status)
            for k, v in out_headers.items():
                self.send_header(k, v)
            if "Content-Length" not in out_headers:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":  # a HEAD body corrupts keep-alive
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_HEAD = _serve

    return Handler
