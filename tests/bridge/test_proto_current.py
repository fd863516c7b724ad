"""The committed generated code matches what ``make proto`` produces from protos/."""

from __future__ import annotations

from pathlib import Path

from testbed.bridge import protogen


def test_generated_code_is_current(tmp_path: Path) -> None:
    fresh = protogen.generate(tmp_path)
    committed_dir = protogen.DEFAULT_OUT
    names = sorted(p.name for p in fresh)
    committed_names = sorted(p.name for p in committed_dir.iterdir() if p.suffix in (".py", ".pyi"))
    assert names == committed_names
    for path in fresh:
        committed = (committed_dir / path.name).read_text()
        assert committed == path.read_text(), f"{path.name} is stale: run `make proto`"


def test_generated_imports_resolve_inside_package() -> None:
    from testbed.bridge.generated import controller_pb2_grpc, policy_pb2, policy_pb2_grpc

    assert policy_pb2.DESCRIPTOR.package == "testbed.v1"
    assert hasattr(policy_pb2_grpc, "PolicyServiceStub")
    assert hasattr(controller_pb2_grpc, "ControllerServiceServicer")
