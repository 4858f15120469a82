"""tooling.download against a real HTTP server on 127.0.0.1 (no model hub is reachable here).

The server serves stand-in files with Range support and can misbehave on demand (drop the
connection, ignore Range, answer 5xx); it also emulates the few Hub endpoints that
huggingface_hub.snapshot_download calls, so download_sd runs its real code path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tooling import download as dl
from tooling.download import Artefact, DownloadError, download_file

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- the server -------------------------------------------------------------------------------


@dataclass
class Route:
    data: bytes
    cut_after: int | None = (
        None  # first GET: announce the whole body, send this many bytes, hang up
    )
    ignore_range: bool = False
    fail_with: list[int] = field(default_factory=list)  # statuses answered (once each) before data
    redirect_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class HubRepo:
    commit: str
    files: dict[str, bytes]  # what the tree listing and checksums describe
    served: dict[str, bytes] = field(default_factory=dict)  # overrides what /resolve sends

    def is_lfs(self, path: str) -> bool:
        return path.endswith((".safetensors", ".bin", ".ckpt"))


@dataclass
class Seen:
    method: str
    path: str
    range: str | None


class Server:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.repos: dict[str, HubRepo] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self  # type: ignore[attr-defined]
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, data: bytes, **behaviour: object) -> str:
        self.routes[path] = Route(data, **behaviour)  # type: ignore[arg-type]
        return self.base + path

    def requests_to(self, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path == path]


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    @property
    def state(self) -> Server:
        return self.server.state  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.state.lock:
            self.state.seen.append(Seen(self.command, path, self.headers.get("Range")))
        if path.startswith("/api/models/"):
            self._hub_api(path)
        elif "/resolve/" in path:
            self._hub_resolve(path)
        else:
            self._plain(path)

    # plain files
    def _plain(self, path: str) -> None:
        route = self.state.routes.get(path)
        if route is None:
            return self._empty(404)
        if route.fail_with:
            return self._empty(route.fail_with.pop(0))
        if route.redirect_to:
            return self._empty(302, {"Location": route.redirect_to, **route.headers})
        cut, route.cut_after = (route.cut_after, None) if self.command == "GET" else (None, None)
        self._body(route.data, route.headers, honour_range=not route.ignore_range, cut_after=cut)

    # Hub emulation: the calls huggingface_hub 2.4 makes for snapshot_download
    def _hub_api(self, path: str) -> None:
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)", path)
        repo = self.state.repos.get(match[1]) if match else None
        if repo is None or match is None:
            return self._empty(404, {"X-Error-Code": "RepoNotFound"})
        if match[2] == "revision":
            siblings = [{"rfilename": name} for name in repo.files]
            info = {"id": match[1], "sha": repo.commit, "private": False, "siblings": siblings}
            return self._json(info)
        tree: list[dict[str, object]] = []
        for name in sorted({n.rsplit("/", 1)[0] for n in repo.files if "/" in n}):
            tree.append({"type": "directory", "path": name, "oid": "0" * 40, "size": 0})
        for name, data in sorted(repo.files.items()):
            entry: dict[str, object] = {
                "type": "file",
                "path": name,
                "size": len(data),
                "oid": _git_sha1(data),
            }
            if repo.is_lfs(name):
                sha = hashlib.sha256(data).hexdigest()
                entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
            tree.append(entry)
        self._json(tree)

    def _hub_resolve(self, path: str) -> None:
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        repo = self.state.repos.get(match[1]) if match else None
        if repo is None or match is None or match[3] not in repo.files:
            return self._empty(404, {"X-Error-Code": "EntryNotFound"})
        name, data = match[3], repo.files[match[3]]
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{_git_sha1(data)}"'}
        if repo.is_lfs(name):
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        self._body(repo.served.get(name, data), headers, honour_range=True, cut_after=None)

    # responses
    def _body(
        self, data: bytes, headers: dict[str, str], *, honour_range: bool, cut_after: int | None
    ) -> None:
        status, start, end = 200, 0, len(data)
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if wanted and honour_range:
            start = int(wanted[1])
            if start >= len(data):
                return self._empty(416, {"Content-Range": f"bytes */{len(data)}", **headers})
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
        body = data[start:end]
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut_after is not None:
            self.wfile.write(body[:cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _json(self, payload: object) -> None:
        self._body(json.dumps(payload).encode(), {"Content-Type": "application/json"},
                   honour_range=False, cut_after=None)  # fmt: skip

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def payload() -> bytes:
    return os.urandom(300_000)


def _fetch(url: str, dest: Path, **kwargs: object) -> Path:
    return download_file(url, dest, progress=False, backoff_s=0, **kwargs)  # type: ignore[arg-type]


# --- download_file ----------------------------------------------------------------------------


def test_download_verifies_size_sha256_md5_and_leaves_no_part(
    server: Server, payload: bytes, tmp_path: Path
) -> None:
    url = server.add("/f.bin", payload)
    dest = tmp_path / "sub" / "f.bin"
    result = _fetch(
        url,
        dest,
        expected_size=len(payload),
        sha256=_sha256(payload),
        md5=hashlib.md5(payload).hexdigest(),
    )
    assert result == dest
    assert dest.read_bytes() == payload
    assert not (tmp_path / "sub" / "f.bin.part").exists()


def test_checksum_mismatch_deletes_part_and_says_expected_and_got(
    server: Server, payload: bytes, tmp_path: Path
) -> None:
    url = server.add("/f.bin", payload)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as caught:
        _fetch(url, dest, sha256="0" * 64)
    message = str(caught.value)
    assert "sha256 mismatch" in message
    assert "0" * 64 in message and _sha256(payload) in message
    assert not dest.exists()
    assert not (tmp_path / "f.bin.part").exists()


def test_md5_mismatch_is_caught_too(server: Server, payload: bytes, tmp_path: Path) -> None:
    url = server.add("/f.bin", payload)
    with pytest.raises(DownloadError, match="md5 mismatch"):
        _fetch(url, tmp_path / "f.bin", sha256=_sha256(payload), md5="f" * 32)


def test_interrupted_transfer_resumes_with_range(
    server: Server, payload: bytes, tmp_path: Path
) -> None:
    cut = 123_457
    url = server.add("/big.bin", payload, cut_after=cut)
    dest = tmp_path / "big.bin"
    _fetch(url, dest, expected_size=len(payload), sha256=_sha256(payload))

    first, second = server.requests_to("/big.bin")
    assert first.range is None
    assert second.range == f"bytes={cut}-"
    assert _sha256(dest.read_bytes()) == _sha256(payload)


def test_existing_part_is_resumed_across_runs(
    server: Server, payload: bytes, tmp_path: Path
) -> None:
    url = server.add("/big.bin", payload)
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(payload[:1000])
    _fetch(url, dest, sha256=_sha256(payload))
    assert [s.range for s in server.requests_to("/big.bin")] == ["bytes=1000-"]
    assert dest.read_bytes() == payload


def test_server_ignoring_range_restarts_from_zero(
    server: Server, payload: bytes, tmp_path: Path
) -> None:
    url = server.add("/f.bin", payload, ignore_range=True)
    dest = tmp_path / "f.bin"
    # A stale part whose bytes do not even match: appending the 200 body to it would be wrong.
    (tmp_path / "f.bin.part").write_bytes(b"x" * 5000)
    _fetch(url, dest, expected_size=len(payload), sha256=_sha256(payload))
    assert [s.range for s in server.requests_to("/f.bin")] == ["bytes=5000-"]
    assert dest.read_bytes() == payload


def test_416_on_a_complete_part_counts_as_done(
    server: Server, payload: bytes, tmp_path: Path
) -> None:
    url = server.add("/f.bin", payload)
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(payload)
    _fetch(url, dest, sha256=_sha256(payload))  # size unknown: only the 416's total can confirm
    assert [s.range for s in server.requests_to("/f.bin")] == [f"bytes={len(payload)}-"]
    assert dest.read_bytes() == payload


def test_416_on_an_oversized_part_restarts(server: Server, payload: bytes, tmp_path: Path) -> None:
    url = server.add("/f.bin", payload)
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(payload + b"junk")
    _fetch(url, dest)
    assert [s.range for s in server.requests_to("/f.bin")] == [f"bytes={len(payload) + 4}-", None]
    assert dest.read_bytes() == payload


def test_404_fails_at_once_naming_url_and_status(server: Server, tmp_path: Path) -> None:
    url = f"{server.base}/nowhere.bin"
    with pytest.raises(DownloadError) as caught:
        _fetch(url, tmp_path / "x.bin", retries=3)
    assert "404" in str(caught.value) and url in str(caught.value)
    assert len(server.requests_to("/nowhere.bin")) == 1


def test_500_is_retried_then_succeeds(server: Server, payload: bytes, tmp_path: Path) -> None:
    url = server.add("/f.bin", payload, fail_with=[500])
    dest = tmp_path / "f.bin"
    _fetch(url, dest, sha256=_sha256(payload))
    assert len(server.requests_to("/f.bin")) == 2
    assert dest.read_bytes() == payload


def test_retries_are_bounded(server: Server, payload: bytes, tmp_path: Path) -> None:
    url = server.add("/f.bin", payload, fail_with=[503] * 10)
    with pytest.raises(DownloadError, match="giving up after 3 attempts"):
        _fetch(url, tmp_path / "f.bin", retries=2)
    assert len(server.requests_to("/f.bin")) == 3


def test_existing_verified_dest_is_skipped(server: Server, payload: bytes, tmp_path: Path) -> None:
    url = server.add("/f.bin", payload)
    dest = tmp_path / "f.bin"
    dest.write_bytes(payload)
    assert _fetch(url, dest, expected_size=len(payload), sha256=_sha256(payload)) == dest
    assert server.requests_to("/f.bin") == []


def test_existing_dest_that_fails_verification_is_replaced(
    server: Server, payload: bytes, tmp_path: Path
) -> None:
    url = server.add("/f.bin", payload)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"truncated")
    _fetch(url, dest, sha256=_sha256(payload))
    assert len(server.requests_to("/f.bin")) == 1
    assert dest.read_bytes() == payload


def test_redirects_are_followed_and_hub_linked_etag_is_checked(
    server: Server, payload: bytes, tmp_path: Path
) -> None:
    server.add("/cdn/blob", payload)
    good = server.add(
        "/good", b"", redirect_to="/cdn/blob", headers={"X-Linked-Etag": f'"{_sha256(payload)}"'}
    )
    bad = server.add(
        "/bad", b"", redirect_to="/cdn/blob", headers={"X-Linked-Etag": '"' + "a" * 64 + '"'}
    )
    assert _fetch(good, tmp_path / "good.bin").read_bytes() == payload
    with pytest.raises(DownloadError, match="sha256 mismatch: expected a{64}"):
        _fetch(bad, tmp_path / "bad.bin")


# --- SAM and big-lama -------------------------------------------------------------------------


def test_manifest_is_typed_and_consistent() -> None:
    for model_type, artefact in dl.SAM_CHECKPOINTS.items():
        assert artefact.url.endswith("/" + artefact.filename)
        assert model_type in artefact.filename
        # Meta's file names carry the first six hex digits of the md5.
        assert artefact.md5 is not None and artefact.filename.endswith(f"_{artefact.md5[:6]}.pth")
        assert artefact.sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", artefact.sha256)
    assert dl.BIG_LAMA.url == "https://huggingface.co/smartywu/big-lama/resolve/main/big-lama.zip"
    with pytest.raises(dataclasses.FrozenInstanceError):
        dl.BIG_LAMA.url = "x"  # type: ignore[misc]


def test_download_sam_uses_the_manifest(
    server: Server, payload: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Artefact("sam_vit_b", "unused", "sam_vit_b_x.pth", len(payload), _sha256(payload), None)
    monkeypatch.setitem(dl.SAM_CHECKPOINTS, "vit_b", fake)
    server.add("/mirror/sam_vit_b_x.pth", payload)
    path = dl.download_sam("vit_b", tmp_path, base_url=f"{server.base}/mirror/", progress=False)
    assert path == tmp_path / "sam_vit_b_x.pth" and path.read_bytes() == payload

    bad = Artefact("sam_vit_b", "unused", "sam_vit_b_x.pth", len(payload), "1" * 64, None)
    monkeypatch.setitem(dl.SAM_CHECKPOINTS, "vit_b", bad)
    path.unlink()
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        dl.download_sam("vit_b", tmp_path, base_url=f"{server.base}/mirror", progress=False)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_big_lama_zip_is_downloaded_and_unpacked(server: Server, tmp_path: Path) -> None:
    config, ckpt = b"generator:\n  kind: ffc_resnet\n", os.urandom(4096)
    url = server.add(
        "/big-lama.zip",
        _zip({"big-lama/config.yaml": config, "big-lama/models/best.ckpt": ckpt}),
    )
    folder = dl.download_big_lama(tmp_path, url=url, progress=False)
    assert folder == tmp_path / "big-lama"
    assert (folder / "config.yaml").read_bytes() == config
    assert (folder / "models" / "best.ckpt").read_bytes() == ckpt
    assert not (tmp_path / "big-lama.zip").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big-lama"]
    # Second run: the unpacked folder is enough, nothing is fetched.
    dl.download_big_lama(tmp_path, url=url, progress=False)
    assert len(server.requests_to("/big-lama.zip")) == 1


def test_big_lama_zip_with_escaping_member_is_rejected(server: Server, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    url = server.add(
        "/big-lama.zip",
        _zip(
            {
                "big-lama/config.yaml": b"a: 1\n",
                "big-lama/models/best.ckpt": b"w",
                "../evil": b"pwned",
            }
        ),
    )
    with pytest.raises(DownloadError, match=r"unsafe archive member '\.\./evil'"):
        dl.download_big_lama(models_dir, url=url, progress=False)
    assert not (tmp_path / "evil").exists()
    assert not (models_dir / "big-lama").exists()
    assert list(models_dir.iterdir()) == []  # no zip, no scratch folder left behind


def test_big_lama_zip_without_checkpoint_is_rejected(server: Server, tmp_path: Path) -> None:
    url = server.add("/big-lama.zip", _zip({"big-lama/config.yaml": b"a: 1\n"}))
    with pytest.raises(DownloadError, match=r"big-lama/models/best\.ckpt"):
        dl.download_big_lama(tmp_path, url=url, progress=False)
    assert not (tmp_path / "big-lama").exists()


# --- Stable Diffusion from an emulated Hub ----------------------------------------------------

COMMIT = "8a4288a76071f7280aedbdb3253bdb9e9d5d84bb"
MODEL_INDEX = {
    "_class_name": "StableDiffusionInpaintPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def _fake_sd_repo() -> dict[str, bytes]:
    """The layout of stable-diffusion-v1-5/stable-diffusion-inpainting, with tiny contents."""
    names = [
        ".gitattributes",
        "README.md",
        "sd-v1-5-inpainting.ckpt",
        "feature_extractor/preprocessor_config.json",
        "safety_checker/config.json",
        "safety_checker/model.fp16.safetensors",
        "safety_checker/pytorch_model.bin",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        "text_encoder/pytorch_model.bin",
        "text_encoder/pytorch_model.fp16.bin",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.safetensors",  # not in the real repo: tests variant=None
    ]
    files = {name: f"{name}\n".encode() + os.urandom(64) for name in names}
    files["model_index.json"] = json.dumps(MODEL_INDEX).encode()
    return files


SD_FP16_FILES = [
    "feature_extractor/preprocessor_config.json",
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
]


def _local_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    )


def test_download_sd_fetches_only_what_the_pipeline_needs(server: Server, tmp_path: Path) -> None:
    files = _fake_sd_repo()
    server.repos["org/sd-inpaint"] = HubRepo(COMMIT, files)
    dest = tmp_path / "sd"
    assert dl.download_sd("org/sd-inpaint", dest, endpoint=server.base, progress=False) == dest

    assert _local_files(dest) == sorted([*SD_FP16_FILES, dl.SD_INFO_FILE])
    for name in SD_FP16_FILES:
        assert (dest / name).read_bytes() == files[name]
    info = json.loads((dest / dl.SD_INFO_FILE).read_text())
    assert info == {
        "model_id": "org/sd-inpaint",
        "revision": "main",
        "commit": COMMIT,
        "variant": "fp16",
        "files": SD_FP16_FILES,
    }
    # The endpoints snapshot_download was served from; nothing of the skipped files was asked for.
    paths = {s.path for s in server.seen}
    assert "/api/models/org/sd-inpaint/revision/main" in paths
    assert f"/api/models/org/sd-inpaint/tree/{COMMIT}" in paths
    assert (
        f"/org/sd-inpaint/resolve/{COMMIT}/unet/diffusion_pytorch_model.fp16.safetensors" in paths
    )
    assert not [p for p in paths if "safety_checker" in p or p.endswith((".bin", ".ckpt"))]


def test_download_sd_full_precision_prefers_plain_safetensors(
    server: Server, tmp_path: Path
) -> None:
    server.repos["org/sd-inpaint"] = HubRepo(COMMIT, _fake_sd_repo())
    dest = tmp_path / "sd"
    dl.download_sd("org/sd-inpaint", dest, endpoint=server.base, variant=None, progress=False)
    weights = [p for p in _local_files(dest) if p.endswith((".safetensors", ".bin"))]
    # vae has plain safetensors; unet and text_encoder only fp16 ones, still better than pickles.
    assert weights == [
        "text_encoder/model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]


def test_download_sd_rejects_a_file_that_does_not_match_the_hub_checksum(
    server: Server, tmp_path: Path
) -> None:
    files = _fake_sd_repo()
    name = "unet/diffusion_pytorch_model.fp16.safetensors"
    tampered = bytes(b ^ 0xFF for b in files[name])  # same size, other bytes
    server.repos["org/sd-inpaint"] = HubRepo(COMMIT, files, served={name: tampered})
    dest = tmp_path / "sd"
    with pytest.raises(DownloadError, match=re.escape(name) + ": sha256"):
        dl.download_sd("org/sd-inpaint", dest, endpoint=server.base, progress=False)
    assert not (dest / name).exists()
    assert not (dest / dl.SD_INFO_FILE).exists()


def test_download_sd_unknown_repo(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="org/missing: repository not found"):
        dl.download_sd("org/missing", tmp_path / "sd", endpoint=server.base, progress=False)


def test_select_sd_files_handles_shards_and_pickle_only_components() -> None:
    repo = [
        "model_index.json",
        "text_encoder_2/config.json",
        "text_encoder_2/model.safetensors.index.fp16.json",
        "text_encoder_2/model-00001-of-00002.fp16.safetensors",
        "text_encoder_2/model-00002-of-00002.fp16.safetensors",
        "text_encoder_2/model.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.non_ema.bin",
        "512-inpainting-ema.safetensors",
    ]
    assert dl.select_sd_files(repo, "fp16") == [
        "model_index.json",
        "text_encoder_2/config.json",
        "text_encoder_2/model-00001-of-00002.fp16.safetensors",
        "text_encoder_2/model-00002-of-00002.fp16.safetensors",
        "text_encoder_2/model.safetensors.index.fp16.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
    ]
    assert "text_encoder_2/model.safetensors" in dl.select_sd_files(repo, None)


# --- command line -----------------------------------------------------------------------------


def test_cli_reports_a_404_in_one_line(server: Server, tmp_path: Path) -> None:
    base = f"{server.base}/missing"
    proc = subprocess.run(
        [sys.executable, "-m", "tooling.download", "sam", "--type", "vit_b"]
        + ["--models-dir", str(tmp_path), "--base-url", base, "--no-progress"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {base}/sam_vit_b_01ec64.pth: HTTP 404 Not Found"]
    assert len(server.requests_to("/missing/sam_vit_b_01ec64.pth")) == 1


def test_cli_prints_paths_for_scripts(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.repos["org/sd-inpaint"] = HubRepo(COMMIT, _fake_sd_repo())
    server.add(
        "/big-lama.zip", _zip({"big-lama/config.yaml": b"a\n", "big-lama/models/best.ckpt": b"w"})
    )
    common = ["--models-dir", str(tmp_path), "--print-path", "--no-progress"]

    assert dl.main(["sd", "--model-id", "org/sd-inpaint", "--base-url", server.base, *common]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'org--sd-inpaint'}\n"
    assert dl.main(["lama", "--base-url", f"{server.base}/big-lama.zip", *common]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'big-lama'}\n"


def test_download_sam3_fetches_the_transformers_files_only(server: Server, tmp_path: Path) -> None:
    names = [*dl.SAM3_FILES, "sam3.pt", "README.md", ".gitattributes"]
    files = {name: f"{name}\n".encode() + os.urandom(64) for name in names}
    server.repos["facebook/sam3"] = HubRepo(COMMIT, files)
    dest = tmp_path / "sam3"
    assert dl.download_sam3("facebook/sam3", dest, endpoint=server.base, progress=False) == dest
    assert _local_files(dest) == sorted([*dl.SAM3_FILES, dl.SD_INFO_FILE])
    for name in dl.SAM3_FILES:
        assert (dest / name).read_bytes() == files[name]
    paths = {s.path for s in server.seen}
    assert f"/facebook/sam3/resolve/{COMMIT}/model.safetensors" in paths
    assert not [p for p in paths if p.endswith("sam3.pt")]  # the original 3.4 GB checkpoint


def test_download_sam3_refuses_a_repo_without_safetensors(server: Server, tmp_path: Path) -> None:
    server.repos["org/not-sam3"] = HubRepo(COMMIT, {"config.json": b"{}"})
    with pytest.raises(DownloadError, match="no model.safetensors, not a transformers SAM 3"):
        dl.download_sam3("org/not-sam3", tmp_path / "s", endpoint=server.base, progress=False)


def test_download_cli_knows_the_sam3_repo() -> None:
    assert dl._parse_args(["sam3"]).sam3_model_id == "facebook/sam3"
