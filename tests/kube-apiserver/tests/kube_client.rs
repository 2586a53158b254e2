//! Cross-checks the test API server with the unmodified `kube` client and
//! kube-runtime's watcher: typed CRUD, every patch type, Status errors as
//! `kube` sees them, and a watcher that relists after a compaction (410 in
//! the stream) without missing a change.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use wasmtrigger_test_apiserver::ApiServer;

fn client(server: &ApiServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse().expect("server URL"));
    kube::Client::try_from(config).expect("client")
}

fn cm(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": app}},
        "data": {"n": "0"},
    }))
    .unwrap()
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud_patches_and_errors() {
    let server = ApiServer::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    let created = api
        .create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("b", "db"))
        .await
        .unwrap();
    let err = api
        .create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), Some(409), "{err}");

    let web = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 1);
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let rest = api
        .list(
            &ListParams::default()
                .limit(1)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items[0].metadata.name.as_deref(), Some("b"));

    let pp = PatchParams::default();
    api.patch("a", &pp, &Patch::Merge(json!({"data": {"m": "1"}})))
        .await
        .unwrap();
    let patch: json_patch_types::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/j", "value": "2"}])).unwrap();
    api.patch("a", &pp, &Patch::<()>::Json(patch))
        .await
        .unwrap();
    api.patch("a", &pp, &Patch::Strategic(json!({"data": {"s": "3"}})))
        .await
        .unwrap();
    let applied = api
        .patch(
            "a",
            &PatchParams::apply("wasmtrigger"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "4"}})),
        )
        .await
        .unwrap();
    let data = applied.data.unwrap();
    for k in ["n", "m", "j", "s", "x"] {
        assert!(data.contains_key(k), "{k} in {data:?}");
    }
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["wasmtrigger"]);

    // A replace carrying the resourceVersion of the first read is stale: 409 Conflict.
    let mut stale = created.clone();
    stale.data = Some([("n".to_string(), "9".to_string())].into());
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), Some(409), "{err}");

    api.delete("a", &DeleteParams::default()).await.unwrap();
    let err = api.get("a").await.unwrap_err();
    assert_eq!(status_code(&err), Some(404), "{err}");
}

mod json_patch_types {
    pub use json_patch::Patch;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_relists_after_a_compaction_and_misses_nothing() {
    let server = ApiServer::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    api.create(&PostParams::default(), &cm("w", "web"))
        .await
        .unwrap();
    let config = watcher::Config::default().timeout(5);
    let mut events = watcher::watcher(api.clone(), config).boxed();
    // Initial list.
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.try_next()).await {
            Ok(Ok(Some(Event::InitApply(o)))) => initial.push(o.metadata.name.unwrap()),
            Ok(Ok(Some(Event::InitDone))) => break,
            Ok(Ok(Some(_))) => {}
            other => panic!("watcher: {other:?}"),
        }
    }
    assert_eq!(initial, ["w"]);

    // Cut the watch and fail its first re-watch, so that a change and a
    // compaction happen while it is away: its next re-watch from the old
    // version gets the in-stream 410, and it must relist and see the change.
    server.fail_next(
        "GET",
        "watch=true",
        wasmtrigger_test_apiserver::ApiError::new(500, "InternalError", "injected"),
    );
    server.cut_watches();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"n": "1"}})),
    )
    .await
    .unwrap();
    server.compact();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut saw, mut relisted) = (false, false);
    while !saw {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("the change arrives after the relist");
        match next {
            Some(Ok(Event::Apply(o) | Event::InitApply(o))) => {
                saw = o.data.as_ref().and_then(|d| d.get("n")).map(String::as_str) == Some("1");
            }
            Some(Ok(Event::Init)) => relisted = true,
            Some(Ok(_)) => {}
            // The 410 surfaces as one error before the relist; the watcher carries on.
            Some(Err(_)) => {}
            None => panic!("watch stream ended"),
        }
    }
    assert!(relisted, "the watcher relisted");
    assert!(
        server.expired_watches() >= 1,
        "a re-watch from before the compaction got the in-stream 410"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_crd_is_discovered_and_its_kind_served() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::DynamicObject;
    use kube::discovery::{Discovery, Scope};

    let server = ApiServer::start(&[]);
    let client = client(&server);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "rollouts.argoproj.io"},
        "spec": {
            "group": "argoproj.io",
            "scope": "Namespaced",
            "names": {"kind": "Rollout", "plural": "rollouts", "singular": "rollout", "shortNames": ["ro"]},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                          "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Rollout")
        .expect("the CRD's kind is discovered");
    assert_eq!(
        (ar.api_version.as_str(), ar.plural.as_str()),
        ("argoproj.io/v1alpha1", "rollouts")
    );
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "rollouts/status" || s.plural == "status"),
        "{caps:?}"
    );

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web"}, "spec": {"replicas": 3},
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    let added = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.try_next().await.unwrap() {
                Some(Event::Apply(o) | Event::InitApply(o))
                    if o.metadata.name.as_deref() == Some("web") =>
                {
                    return o;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the watch sees the new object");
    assert_eq!(added.data["spec"]["replicas"], 3);

    api.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Healthy"}, "spec": {"replicas": 9}})),
    )
    .await
    .unwrap();
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Forged"}, "spec": {"paused": true}})),
    )
    .await
    .unwrap();
    let got = api.get("web").await.unwrap();
    assert_eq!(
        got.data["status"]["phase"], "Healthy",
        "status moves only through /status"
    );
    assert_eq!(got.data["spec"]["replicas"], 3, "/status moves only status");
    assert_eq!(got.data["spec"]["paused"], true);

    crds.delete("rollouts.argoproj.io", &DeleteParams::default())
        .await
        .unwrap();
    let err = api.get("web").await.unwrap_err();
    assert_eq!(status_code(&err), Some(404), "{err}");
    let discovery = Discovery::new(client).run().await.unwrap();
    assert!(!discovery.groups().any(|g| g.name() == "argoproj.io"));
}
