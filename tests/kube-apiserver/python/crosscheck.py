"""Cross-checks the test API server with the official Kubernetes Python client.

Usage: crosscheck.py KUBECONFIG (watch|election|crd)

  watch     list, then watch ConfigMaps from the list's resourceVersion with
            bookmarks while another thread creates, updates and deletes one;
  election  three candidates run the client's Lease-based leader election; the
            first leader fails after a moment and a second one takes over;
  crd       creates a CustomResourceDefinition, waits for it to be Established,
            then creates, lists, patches (object and status subresource) and
            deletes objects of its kind with the custom-objects API, and asks
            for a Table; finally deletes the CRD and sees the kind go.

Prints one JSON document with what the client saw; the Rust test asserts on it.
"""

import json
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock


def check_watch():
    v1 = client.CoreV1Api()
    listed = v1.list_namespaced_config_map("default")
    start = listed.metadata.resource_version

    def change():
        time.sleep(0.3)
        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py"), data={"a": "1"})
        v1.create_namespaced_config_map("default", body)
        v1.patch_namespaced_config_map("py", "default", {"data": {"a": "2"}})
        v1.delete_namespaced_config_map("py", "default")

    threading.Thread(target=change, daemon=True).start()
    seen = []
    w = watch.Watch()
    for event in w.stream(v1.list_namespaced_config_map, "default",
                          resource_version=start, allow_watch_bookmarks=True,
                          timeout_seconds=2):
        obj = event["object"]
        # The client hands bookmarks on as the raw object.
        if event["type"] == "BOOKMARK":
            version = obj["metadata"]["resourceVersion"] if isinstance(obj, dict) \
                else obj.metadata.resource_version
            seen.append({"type": "BOOKMARK", "resourceVersion": version})
        else:
            seen.append({"type": event["type"], "name": obj.metadata.name,
                         "data": obj.data, "resourceVersion": obj.metadata.resource_version})
    return {"start": start, "events": seen, "last": w.resource_version}


def check_election():
    leaders = []  # (identity, started, stopped or None)
    lock = threading.Lock()

    def candidate(identity):
        def started():
            with lock:
                first = not leaders
                leaders.append([identity, time.time(), None])
            if first:
                time.sleep(1.5)
                raise RuntimeError("the first leader gives up")
            while True:
                time.sleep(60)

        def stopped():
            with lock:
                for entry in leaders:
                    if entry[0] == identity and entry[2] is None:
                        entry[2] = time.time()

        cfg = electionconfig.Config(LeaseLock("crosscheck", "default", identity),
                                    lease_duration=4, renew_deadline=3, retry_period=1,
                                    onstarted_leading=started, onstopped_leading=stopped)
        leaderelection.LeaderElection(cfg).run()

    for n in range(3):
        threading.Thread(target=candidate, args=(f"candidate-{n}",), daemon=True).start()
    deadline = time.time() + 30
    while time.time() < deadline:
        with lock:
            if len(leaders) >= 2:
                break
        time.sleep(0.1)
    # Room for a wrongly elected third leader to show up.
    time.sleep(2.5)
    lease = client.CoordinationV1Api().read_namespaced_lease("crosscheck", "default")
    with lock:
        return {"leaders": [{"identity": i, "started": s, "stopped": e} for i, s, e in leaders],
                "holder": lease.spec.holder_identity}


def check_crd():
    ext = client.ApiextensionsV1Api()
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "certificates.cert-manager.io"},
        "spec": {
            "group": "cert-manager.io",
            "scope": "Namespaced",
            "names": {"kind": "Certificate", "plural": "certificates", "singular": "certificate",
                      "shortNames": ["cert", "certs"]},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                "additionalPrinterColumns": [
                    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
                    {"name": "Secret", "type": "string", "jsonPath": ".spec.secretName"},
                ],
            }],
        },
    }
    ext.create_custom_resource_definition(crd)
    established = False
    for _ in range(100):
        got = ext.read_custom_resource_definition("certificates.cert-manager.io")
        conditions = (got.status and got.status.conditions) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            established = True
            break
        time.sleep(0.05)
    api = client.CustomObjectsApi()
    args = ("cert-manager.io", "v1", "default", "certificates")
    api.create_namespaced_custom_object(*args, {
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "web"}, "spec": {"secretName": "web-tls"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
    created_status = api.get_namespaced_custom_object(*args, "web").get("status")
    api.patch_namespaced_custom_object_status(*args, "web", {
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        "spec": {"secretName": "ignored"},
    })
    api.patch_namespaced_custom_object(*args, "web", {
        "spec": {"dnsNames": ["web.example"]},
        "status": {"conditions": [{"type": "Ready", "status": "Forged"}]},
    })
    after = api.get_namespaced_custom_object(*args, "web")
    listed = api.list_namespaced_custom_object(*args)
    # A Table, as kubectl asks for it, through the client's own transport.
    method, url, headers, body, _ = api.api_client.param_serialize(
        "GET", "/apis/cert-manager.io/v1/namespaces/default/certificates",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"])
    response = api.api_client.call_api(method, url, header_params=headers, body=body)
    response.read()
    table = json.loads(response.data)
    api.delete_namespaced_custom_object(*args, "web")
    ext.delete_custom_resource_definition("certificates.cert-manager.io")
    try:
        api.list_namespaced_custom_object(*args)
        gone = False
    except client.exceptions.ApiException as e:
        gone = e.status == 404
    return {
        "established": established,
        "createdStatus": created_status,
        "spec": after["spec"],
        "status": after["status"],
        "listed": [i["metadata"]["name"] for i in listed["items"]],
        "columns": [c["name"] for c in table["columnDefinitions"]],
        "rows": [r["cells"] for r in table["rows"]],
        "gone": gone,
    }


def main():
    config.load_kube_config(config_file=sys.argv[1])
    check = {"watch": check_watch, "election": check_election, "crd": check_crd}[sys.argv[2]]
    print(json.dumps(check()))


if __name__ == "__main__":
    main()
