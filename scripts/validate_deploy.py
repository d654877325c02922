"""Validates the deployment files offline.

- docker-compose.kafka.yml against the Compose Specification schema
  (check-jsonschema's vendored copy);
- every kustomize overlay under k8s/overlays, rendered (resources,
  namespace, labels, images, JSON 6902 patches: the kustomize features the
  manifests use; anything else is refused), against the Kubernetes API
  schemas (kubernetes-validate, strict: unknown fields are errors), plus the
  project's own rules: every container has requests, limits and probes,
  every Service selects a Deployment's pods;
- the monitoring files with promtool (PIVOTAL_PROMTOOL, or promtool on the
  PATH): monitoring/prometheus.yml with the alerting rules it loads,
  monitoring/prometheus-kubernetes.yml with the rules of the generated
  ConfigMap k8s/base/alert-rules.yaml (Debian's promtool is built without
  Kubernetes discovery, so the pod discovery is checked as a static target;
  its relabelling is checked as written), the rules' unit tests
  (monitoring/alerts.test.yml), and a runbook section in docs/runbook.md
  for every alert.

Exit status 0 when everything is valid; errors are printed one per line.
Usage: python3 scripts/validate_deploy.py [repository root]
"""

import copy
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import jsonpatch
import kubernetes_validate
import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
KUBERNETES_VERSION = "1.33.0"


def pod_specs(doc):
    kind = doc.get("kind")
    spec = doc.get("spec", {})
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        yield spec.get("template", {}).get("spec", {})
    elif kind == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})


def render(directory):
    """The resources of the kustomization in `directory`."""
    path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise SystemExit(f"{path}: kustomize fields this validator does not render: {sorted(unknown)}")
    docs = []
    for resource in kustomization.get("resources", []):
        target = (directory / resource).resolve()
        if target.is_dir():
            docs.extend(render(target))
        else:
            docs.extend(d for d in yaml.safe_load_all(target.read_text()) if d)
    namespace = kustomization.get("namespace")
    for doc in docs:
        metadata = doc.setdefault("metadata", {})
        if namespace and doc.get("kind") not in CLUSTER_SCOPED:
            metadata["namespace"] = namespace
        for label in kustomization.get("labels", []):
            metadata.setdefault("labels", {}).update(label.get("pairs", {}))
    for image in kustomization.get("images", []):
        for doc in docs:
            for spec in pod_specs(doc):
                for container in spec.get("containers", []) + spec.get("initContainers", []):
                    name, _, tag = container["image"].partition(":")
                    if name == image["name"]:
                        container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    for patch in kustomization.get("patches", []):
        target = patch.get("target", {})
        operations = yaml.safe_load(patch["patch"])
        matched = 0
        for i, doc in enumerate(docs):
            if target.get("kind") not in (None, doc.get("kind")):
                continue
            if target.get("name") not in (None, doc["metadata"].get("name")):
                continue
            docs[i] = jsonpatch.apply_patch(copy.deepcopy(doc), operations)
            matched += 1
        if matched == 0:
            raise SystemExit(f"{path}: patch for {target} matches no resource")
    return docs


def own_rules(doc):
    errors = []
    name = f"{doc.get('kind')}/{doc['metadata'].get('name')}"
    for spec in pod_specs(doc):
        for container in spec.get("containers", []):
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if not resources.get(part):
                    errors.append(f"{name}: container {container['name']} has no resource {part}")
            if doc.get("kind") == "Deployment":
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in container:
                        errors.append(f"{name}: container {container['name']} has no {probe}")
    return errors


def validate_overlay(overlay):
    errors = []
    docs = render(overlay)
    pods = [
        d["spec"]["template"]["metadata"].get("labels", {})
        for d in docs
        if d.get("kind") == "Deployment"
    ]
    for doc in docs:
        label = f"{overlay.name}: {doc.get('kind')}/{doc['metadata'].get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            errors.append(f"{label}: {path}: {error.message}")
        except Exception as error:  # unknown kinds and versions
            errors.append(f"{label}: {error}")
        errors.extend(f"{overlay.name}: {e}" for e in own_rules(doc))
        if doc.get("kind") == "Service":
            selector = doc["spec"].get("selector", {})
            if not any(selector.items() <= labels.items() for labels in pods):
                errors.append(f"{label}: selector {selector} matches no Deployment's pods")
    return len(docs), errors


def promtool(*args, cwd):
    """Runs promtool; its combined output, and whether it succeeded."""
    tool = os.environ.get("PIVOTAL_PROMTOOL") or shutil.which("promtool")
    if not tool:
        raise SystemExit("promtool not found: scripts/services.sh installs it (PIVOTAL_PROMTOOL)")
    result = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True)
    return (result.stdout + result.stderr).strip(), result.returncode == 0


def validate_monitoring(root):
    errors = []
    monitoring = root / "monitoring"
    output, ok = promtool("check", "config", "prometheus.yml", cwd=monitoring)
    if ok:
        print("monitoring/prometheus.yml: valid, with its rules")
    else:
        errors.append(f"monitoring/prometheus.yml: {output}")
    config_map = yaml.safe_load((root / "k8s/base/alert-rules.yaml").read_text())
    config = yaml.safe_load((monitoring / "prometheus-kubernetes.yml").read_text())
    for job in config.get("scrape_configs", []):
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["127.0.0.1:9102"]}]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        (scratch / "rules").mkdir()
        for name, text in config_map.get("data", {}).items():
            (scratch / "rules" / name).write_text(text)
        (scratch / "prometheus.yml").write_text(yaml.safe_dump(config))
        output, ok = promtool("check", "config", "prometheus.yml", cwd=scratch)
    if ok:
        print("monitoring/prometheus-kubernetes.yml: valid, with the rules of k8s/base/alert-rules.yaml")
    else:
        errors.append(f"monitoring/prometheus-kubernetes.yml: {output}")
    output, ok = promtool("test", "rules", "alerts.test.yml", cwd=monitoring)
    if ok:
        print("monitoring/alerts.test.yml: every test passed")
    else:
        errors.append(f"monitoring/alerts.test.yml: {output}")
    runbook = (root / "docs/runbook.md").read_text()
    anchors = {m.group(1).lower() for m in re.finditer(r"^## (\S+)$", runbook, re.MULTILINE)}
    rules = yaml.safe_load((monitoring / "alerts.yml").read_text())
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue
            expected = f"docs/runbook.md#{rule['alert'].lower()}"
            if rule.get("annotations", {}).get("runbook") != expected:
                errors.append(f"monitoring/alerts.yml: {rule['alert']}: runbook annotation is not {expected}")
            if rule["alert"].lower() not in anchors:
                errors.append(f"docs/runbook.md: no section for {rule['alert']}")
    return errors


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    errors = []
    compose = root / "docker-compose.kafka.yml"
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(compose)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        errors.append(f"{compose.name}: {result.stdout.strip()} {result.stderr.strip()}")
    else:
        print(f"{compose.name}: valid against the Compose Specification")
    overlays = sorted(p for p in (root / "k8s" / "overlays").iterdir() if p.is_dir())
    if not overlays:
        errors.append("k8s/overlays holds no overlay")
    for overlay in overlays:
        count, found = validate_overlay(overlay)
        errors.extend(found)
        if not found:
            print(f"k8s/overlays/{overlay.name}: {count} resources valid against Kubernetes {KUBERNETES_VERSION}")
    errors.extend(validate_monitoring(root))
    for error in errors:
        print(error, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
