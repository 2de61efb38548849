"""The kustomize overlays render, pass strict schema validation, and keep the deployment's promises."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_helpers import K8S_DIR, KUBERNETES_VERSION, OVERLAYS, only, run_tool

pytestmark = pytest.mark.timeout(300)


def _validate_strict(kubernetes_validate: str, manifests: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    """One kubernetes-validate run over several renders (each named by its file): it starts slowly."""
    files = []
    for name, text in manifests.items():
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(text)
    result = run_tool([kubernetes_validate, "--strict", "-k", KUBERNETES_VERSION, *map(str, files)])
    return result.returncode, result.stdout + result.stderr


def _queue_autoscaling_overlay(tmp_path: Path) -> Path:
    """A throwaway overlay: the gpu overlay plus the queue-autoscaling component."""
    overlay = tmp_path / "gpu-queue-autoscaling"
    overlay.mkdir()
    # kustomize refuses absolute paths, so the overlay points back with relative ones.
    k8s = Path(os.path.relpath(K8S_DIR, overlay))
    kustomization = {
        "resources": [str(k8s / "overlays" / "gpu")],
        "components": [str(k8s / "components" / "queue-autoscaling")],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


def _container(objects: list[dict]) -> dict:
    return only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _settings(objects: list[dict]) -> dict[str, str]:
    return only(objects, "ConfigMap")["data"]


def test_overlays_and_component_render_and_pass_strict_schema_validation(
    render_kustomization: Callable[[Path], str], tool: Callable[[str], str], tmp_path: Path
) -> None:
    renders = {overlay: render_kustomization(K8S_DIR / "overlays" / overlay) for overlay in OVERLAYS}
    renders["gpu-queue-autoscaling"] = render_kustomization(_queue_autoscaling_overlay(tmp_path))
    code, output = _validate_strict(tool("kubernetes-validate"), renders, tmp_path)
    assert code == 0, output
    objects = sum(len([doc for doc in yaml.safe_load_all(text) if doc]) for text in renders.values())
    assert output.count("passed for resource") == objects, output


def test_queue_autoscaling_component_scales_on_cpu_and_waiting_requests(
    render_kustomization: Callable[[Path], str], tmp_path: Path
) -> None:
    manifests = render_kustomization(_queue_autoscaling_overlay(tmp_path))
    hpa = only(list(yaml.safe_load_all(manifests)), "HorizontalPodAutoscaler")
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "seqserve_num_requests_waiting"


def test_strict_validation_rejects_a_misspelled_field(tool: Callable[[str], str], tmp_path: Path) -> None:
    # Proves the validator is strict here: a typo must fail, not pass silently.
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "typo"},
        "spec": {"ports": [{"port": 80, "targetPrt": 8000}]},
    }
    code, output = _validate_strict(tool("kubernetes-validate"), {"typo": yaml.safe_dump(manifest)}, tmp_path)
    assert code != 0, output


def test_gpu_overlay_asks_for_one_gpu_with_the_cuda_image_and_provider(
    overlay_objects: Callable[[str], list[dict]],
) -> None:
    objects = overlay_objects("gpu")
    container = _container(objects)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    assert _settings(objects)["SEQSERVE_PROVIDER"] == "cuda"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"]


def test_cpu_overlay_uses_the_cpu_provider_and_no_gpu(overlay_objects: Callable[[str], list[dict]]) -> None:
    objects = overlay_objects("cpu")
    container = _container(objects)
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["image"].endswith("-cpu")
    assert _settings(objects)["SEQSERVE_PROVIDER"] == "cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_non_root_read_only_without_capabilities(
    overlay: str, overlay_objects: Callable[[str], list[dict]]
) -> None:
    objects = overlay_objects(overlay)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    container = _container(objects)
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    tmp_mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp_mounts, "a read-only root needs a writable /tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[tmp_mounts[0]["name"]]
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_pre_stop_sleep_plus_drain(
    overlay: str, overlay_objects: Callable[[str], list[dict]]
) -> None:
    objects = overlay_objects(overlay)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    pre_stop_s = _container(objects)["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain_s = float(_settings(objects)["SEQSERVE_DRAIN_TIMEOUT_S"])
    assert pre_stop_s > 0, "endpoints need a moment to drop the pod before SIGTERM"
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + drain_s


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_readyz_healthz_and_grpc_health(
    overlay: str, overlay_objects: Callable[[str], list[dict]]
) -> None:
    container = _container(overlay_objects(overlay))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["grpc"]["port"] == ports["grpc"] == 50051
    assert ports["http"] == 8000


def test_service_names_http_and_grpc_ports_with_app_protocols(
    overlay_objects: Callable[[str], list[dict]],
) -> None:
    ports = {p["name"]: p for p in only(overlay_objects("cpu"), "Service")["spec"]["ports"]}
    assert ports["http"]["appProtocol"] == "http"
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert (ports["http"]["port"], ports["grpc"]["port"]) == (8000, 50051)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_configmap_key_is_a_service_setting(
    overlay: str, overlay_objects: Callable[[str], list[dict]]
) -> None:
    from service.settings import Settings

    known = {f"SEQSERVE_{name.upper()}" for name in Settings.model_fields}
    settings = _settings(overlay_objects(overlay))
    assert set(settings) <= known, f"unknown settings: {sorted(set(settings) - known)}"
    # The values must also pass the service's own validation.
    Settings.model_validate({key.removeprefix("SEQSERVE_").lower(): value for key, value in settings.items()})


def test_api_key_comes_from_an_optional_secret(overlay_objects: Callable[[str], list[dict]]) -> None:
    env = {e["name"]: e for e in _container(overlay_objects("cpu"))["env"]}
    secret_ref = env["SEQSERVE_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert secret_ref["optional"] is True
    assert "SEQSERVE_API_KEY" not in _settings(overlay_objects("cpu"))


def test_autoscaler_and_disruption_budget_target_the_deployment(
    overlay_objects: Callable[[str], list[dict]],
) -> None:
    objects = overlay_objects("cpu")
    deployment = only(objects, "Deployment")
    hpa = only(objects, "HorizontalPodAutoscaler")
    pdb = only(objects, "PodDisruptionBudget")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "seqserve",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2, "one pod must survive a voluntary disruption"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    policy = only(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
