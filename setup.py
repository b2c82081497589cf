"""Builds the ``minipay`` distribution (the client library and both CLIs), generating
``minipay.v1`` on the way.

The gRPC code is made from ``protofiles/minipay/v1/*.proto`` by the grpcio-tools that
pyproject.toml requires for building, exactly as ``make protos`` does, so no generated file is
ever committed and every wheel carries code that matches its .proto files. An editable
install writes the code into the working tree instead, where the client and the servers
import it from.

The dependencies are computed here rather than listed: the generated code checks on import
that grpcio and protobuf are at least the versions that generated it, so their lower bounds
are read from the generated files themselves.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).absolute().parent
PROTO_ROOT = "protofiles"
PROTO_PACKAGE = "minipay/v1"


def generate(out: Path) -> None:
    """Runs protoc over every minipay/v1 .proto, writing the modules and stubs under ``out``."""
    protos = sorted(
        str(p.relative_to(HERE)) for p in (HERE / PROTO_ROOT / PROTO_PACKAGE).glob("*.proto")
    )
    if not protos:
        sys.exit(f"no .proto files in {HERE / PROTO_ROOT / PROTO_PACKAGE}")
    out.mkdir(parents=True, exist_ok=True)
    # python -m grpc_tools.protoc adds the well-known types (google/protobuf/*.proto) itself.
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}"]
    command += [f"--{kind}_out={out}" for kind in ("python", "pyi", "grpc_python")]
    subprocess.run(command + protos, cwd=HERE, check=True)


def _found(pattern: str, files: list[Path]) -> str:
    """The first match of ``pattern`` in ``files``: a version the generator wrote."""
    for path in files:
        match = re.search(pattern, path.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            return match.group(1)
    sys.exit(f"generated code without {pattern!r}: is grpcio-tools >= 1.71 installed?")


def dependencies() -> list[str]:
    """grpcio and protobuf from the versions the generator stamped, and grpcio-status."""
    with tempfile.TemporaryDirectory() as folder:
        generate(Path(folder))
        made = sorted((Path(folder) / PROTO_PACKAGE).glob("*.py"))
        grpc_version = _found(r"^GRPC_GENERATED_VERSION = '([0-9.]+)'", made)
        protobuf_version = _found(r"^# Protobuf Python Version: ([0-9.]+)", made)
    grpc_major = int(grpc_version.split(".")[0])
    protobuf_major = int(protobuf_version.split(".")[0])
    return [
        f"grpcio>={grpc_version},<{grpc_major + 1}",
        # google.rpc.Status details on errors (ErrorInfo, BadRequest, RetryInfo); released
        # in step with grpcio, so the same lower bound.
        f"grpcio-status>={grpc_version},<{grpc_major + 1}",
        # The same major as the generator: a newer major only warns today and may refuse.
        f"protobuf>={protobuf_version},<{protobuf_major + 1}",
    ]


class BuildPyWithProtos(build_py):
    """build_py that also writes the generated minipay.v1 modules."""

    def run(self) -> None:
        super().run()
        # After the copy, so stale generated files in a working tree never win over fresh ones.
        generate(HERE if self.editable_mode else Path(self.build_lib))


setup(install_requires=dependencies(), cmdclass={"build_py": BuildPyWithProtos})
