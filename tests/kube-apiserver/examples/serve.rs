//! Runs the test API server until interrupted and writes a kubeconfig:
//! `cargo run -p wasmtrigger-test-apiserver --example serve -- KUBECONFIG_PATH`.

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "kubeconfig".into());
    let server = wasmtrigger_test_apiserver::ApiServer::start(&[]);
    server
        .write_kubeconfig(std::path::Path::new(&path))
        .expect("write kubeconfig");
    println!("serving {} (kubeconfig: {path})", server.url());
    loop {
        std::thread::park();
    }
}
