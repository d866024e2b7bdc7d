"""Renders every kustomization under deploy/kubernetes and checks the objects, offline.

    python3 deploy/kubernetes/check.py --kubectl kubectl --vigil target/release/vigil

with kubernetes-validate, checkov and PyYAML importable (scripts/test installs them).

For each overlay (and monitoring/):
  * `kubectl kustomize` renders it;
  * every built-in object is validated, strictly (unknown fields are errors), against the
    Kubernetes OpenAPI schemas of the oldest and newest versions we support
    (kubernetes-validate, which ships them);
  * the ServiceMonitor, whose schema is a CRD that ships with no registry package, is checked
    for the fields vigil depends on;
  * the StatefulSet's shard count equals its replicas, every file the config names is a
    mounted Secret item, and `vigil check-config` accepts the rendered config with those files
    in place;
  * checkov's Kubernetes policies pass (no privileged pods, non-root, read-only root, ...).
First, each checker is shown a broken object and must reject it, so a checker that silently
passes everything fails this script.
"""

import argparse
import copy
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
VERSIONS = ["1.29.0", "1.37.0"]
SECRET_DIR = "/run/secrets/vigil/"
# Image digests are the deployer's to pin (an overlay's `images: digest:`): we publish no image.
CHECKOV_SKIP = ["CKV_K8S_43"]


def render(kubectl, path):
    out = subprocess.run([kubectl, "kustomize", str(path)], check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def schema_errors(obj):
    errors = []
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{version}: {'.'.join(map(str, e.path))}: {e.message}")
    return errors


def service_monitor_errors(obj):
    spec = obj.get("spec", {})
    errors = []
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        errors.append("apiVersion must be monitoring.coreos.com/v1")
    if not spec.get("selector", {}).get("matchLabels"):
        errors.append("spec.selector.matchLabels is empty: it would scrape nothing, or everything")
    for ep in spec.get("endpoints", []) or [None]:
        if not ep or ep.get("path") != "/metrics" or not ep.get("port"):
            errors.append("each endpoint needs a named port and path /metrics")
            continue
        cred = ep.get("authorization", {}).get("credentials", {})
        if not (cred.get("name") and cred.get("key")):
            errors.append("an endpoint without the API token: /metrics answers 401")
    return errors


def consistency_errors(objs):
    """What the schemas cannot see: the parts that must agree with each other and with vigil."""
    errors = []
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    configmaps = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}
    services = {o["metadata"]["name"] for o in by_kind.get("Service", [])}
    for sts in by_kind.get("StatefulSet", []):
        pod = sts["spec"]["template"]["spec"]
        if sts["spec"]["serviceName"] not in services:
            errors.append(f"serviceName {sts['spec']['serviceName']} is not a rendered Service")
        (c,) = [c for c in pod["containers"] if c["name"] == "vigil"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        args = c.get("args", [])
        if "--shard" in args:
            shard = args[args.index("--shard") + 1]
            if shard != "auto/$(VIGIL_SHARDS)":
                errors.append(f"--shard {shard}: the pods' shard must come from their names")
            elif env.get("VIGIL_SHARDS") != str(sts["spec"]["replicas"]):
                errors.append(
                    f"VIGIL_SHARDS={env.get('VIGIL_SHARDS')} but replicas={sts['spec']['replicas']}: "
                    "cameras of the missing shards would run nowhere"
                )
        mounts = {m["name"]: m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        secret_files = set()
        config = None
        for name, path in mounts.items():
            vol = volumes.get(name)
            if vol and "secret" in vol:
                secret_files |= {path + i["path"] for i in vol["secret"].get("items", [])}
            if vol and "configMap" in vol:
                cm = configmaps.get(vol["configMap"]["name"])
                if cm is None:
                    errors.append(f"volume {name}: ConfigMap {vol['configMap']['name']} is not rendered")
                elif path + "cameras.toml" == "/etc/vigil/cameras.toml":
                    config = cm["data"]["cameras.toml"]
        if config is None:
            errors.append("no ConfigMap mounted as /etc/vigil/cameras.toml, the file the pods run")
            continue
        cfg = tomllib.loads(config)
        named = [cfg.get(s, {}).get(k) for s, k in [("database", "url_file"), ("redis", "url_file"), ("server", "token_file")]]
        for f in named:
            if f and f not in secret_files:
                errors.append(f"the config reads {f}, which no Secret item is mounted as")
    return errors


def vigil_accepts(vigil, config_text):
    """`vigil check-config` on the rendered config, with stand-ins where the Secret's files go."""
    with tempfile.TemporaryDirectory() as tmp:
        secrets = Path(tmp, "secrets")
        secrets.mkdir()
        (secrets / "database-url").write_text("postgres://vigil:x@postgres:5432/vigil\n")
        (secrets / "redis-url").write_text("redis://:x@redis:6379\n")
        (secrets / "api-token").write_text("t" * 32)
        cfg = Path(tmp, "cameras.toml")
        cfg.write_text(config_text.replace(SECRET_DIR, str(secrets) + "/"))
        r = subprocess.run([vigil, "check-config", str(cfg)], capture_output=True, text=True)
        return [] if r.returncode == 0 else [f"vigil check-config: {(r.stderr or r.stdout).strip()}"]


def checkov_errors(objs, skip):
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "all.yaml").write_text(yaml.safe_dump_all(objs))
        cmd = [sys.executable, "-m", "checkov.main", "-d", tmp, "--framework", "kubernetes", "--quiet",
               "--compact", "--skip-download", "--skip-check", ",".join(skip)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            return []
        failed = [line.strip() for line in r.stdout.splitlines() if line.startswith("Check:")]
        return failed or [f"checkov exited {r.returncode}: {r.stderr.strip()[-500:]}"]


def check(objs, args):
    errors = []
    for o in objs:
        name = f"{o['kind']}/{o['metadata']['name']}"
        found = service_monitor_errors(o) if o["kind"] == "ServiceMonitor" else schema_errors(o)
        errors += [f"{name}: {e}" for e in found]
    errors += consistency_errors(objs)
    for cm in (o for o in objs if o["kind"] == "ConfigMap" and "cameras.toml" in o.get("data", {})):
        errors += vigil_accepts(args.vigil, cm["data"]["cameras.toml"])
    errors += checkov_errors(objs, CHECKOV_SKIP)
    return errors


def self_test(objs, args):
    """Each checker must reject a broken copy of the cpu overlay."""
    def broken(change):
        bad = copy.deepcopy(objs)
        sts = next(o for o in bad if o["kind"] == "StatefulSet")
        change(sts, bad)
        return bad

    def container(sts):
        return sts["spec"]["template"]["spec"]["containers"][0]

    cases = {
        "a string where the schema wants an integer": (
            lambda s, _: s["spec"].update(replicas="three"), lambda b: sum(map(schema_errors, b), [])),
        "a field Kubernetes does not have": (
            lambda s, _: container(s).update(imagePullSecret="x"), lambda b: sum(map(schema_errors, b), [])),
        "a privileged container running as root": (
            lambda s, _: (container(s)["securityContext"].update(privileged=True, runAsUser=0),
                          s["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")),
            lambda b: checkov_errors(b, CHECKOV_SKIP)),
        "a shard count unlike the replicas": (
            lambda s, _: s["spec"].update(replicas=4), consistency_errors),
        "a config naming a file no Secret provides": (
            lambda _, b: next(o for o in b if o["kind"] == "ConfigMap")["data"].update(
                {"cameras.toml": "[database]\nurl_file = \"/run/secrets/vigil/db\"\n"}), consistency_errors),
        "a config vigil refuses": (
            lambda _, b: next(o for o in b if o["kind"] == "ConfigMap")["data"].update(
                {"cameras.toml": "[[cameras]]\nid = \"a b\"\nurl = \"rtsp://h/1\"\n"}),
            lambda b: vigil_accepts(args.vigil, next(o for o in b if o["kind"] == "ConfigMap")["data"]["cameras.toml"])),
    }
    ok = True
    for what, (change, checker) in cases.items():
        if not checker(broken(change)):
            print(f"[kubernetes] self-test: {what} was NOT rejected", file=sys.stderr)
            ok = False
    if ok:
        print(f"[kubernetes] self-test: each of {len(cases)} broken objects was rejected")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--vigil", required=True)
    args = ap.parse_args()
    targets = sorted(HERE.glob("overlays/*")) + [HERE / "monitoring"]
    rendered = {t.relative_to(HERE): render(args.kubectl, t) for t in targets}
    if not self_test(rendered[Path("overlays/cpu")], args):
        sys.exit(1)
    failed = False
    for target, objs in rendered.items():
        errors = check(objs, args)
        kinds = ", ".join(sorted({o["kind"] for o in objs}))
        print(f"[kubernetes] {target}: {len(objs)} objects ({kinds}): {'OK' if not errors else 'FAILED'}")
        for e in errors:
            print(f"    {e}")
        failed |= bool(errors)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
