//! `fake-kube N NODE KUBECONFIG`: a test API server on 127.0.0.1 serving N synthetic pods of node
//! NODE (for the memory benchmark of a large pod cache); writes a kubeconfig pointing at it to
//! KUBECONFIG, prints `ready` and serves until killed.

use sensor_tests::kubeapi::{KubeApi, pod};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(n), Some(node), Some(kubeconfig)) = (
        args.first().and_then(|s| s.parse::<u32>().ok()),
        args.get(1),
        args.get(2),
    ) else {
        eprintln!("usage: fake-kube N NODE KUBECONFIG");
        std::process::exit(2);
    };
    let api = KubeApi::start();
    for i in 0..n {
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
        let container = format!("{:064x}", u64::from(i) + 1);
        api.add(pod(
            &format!("ns-{}", i % 50),
            &format!("app-{i}"),
            &uid,
            &container,
            "registry.local/app:1",
            &format!("app{}", i % 200),
            node,
        ));
    }
    let path = std::path::Path::new(kubeconfig);
    let written = api.kubeconfig(path.parent().unwrap_or(std::path::Path::new(".")));
    if written != path {
        std::fs::rename(&written, path).expect("placing the kubeconfig");
    }
    println!("ready");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
