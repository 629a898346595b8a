//! A small wget: fetches a URL with an HTTP client task and prints the status,
//! the headers and where the time went (curl's `-w` phases).
//!
//! Redirects are not followed unless asked, as `http::ClientTask` does by
//! default (`redirect_max` 0): a 3xx is printed with its `Location`.
//! `--redirects N` follows up to N of them (301, 302, 303, 307, 308), like
//! curl's `-L --max-redirs N`, and prints the final response.
//!
//! `https://` URLs are checked against the Mozilla root store; `--cacert FILE`
//! trusts the CA certificates in FILE (PEM) as well, like curl's `--cacert`.
//!
//! `cargo run --example http_client -- http://127.0.0.1:8080/ [--redirects N] [--body]
//!  [--cacert FILE]`

#[path = "common/args.rs"]
mod args;

use std::sync::Arc;
use taskweave::comm::ClientConfig;
use taskweave::http;
use taskweave::{Series, WaitGroup};

/// The command line this example accepts.
const SPEC: args::Spec = args::Spec {
    usage: "usage: http_client URL [--redirects 0] [--body] [--cacert FILE]",
    options: &["redirects", "cacert"],
    switches: &["body"],
};

fn main() {
    let args = args::Args::parse(&SPEC);
    let url = match args.positional() {
        [url] => url.clone(),
        _ => {
            eprintln!("error: one URL, please\n{}", SPEC.usage);
            std::process::exit(2);
        }
    };
    let show_body = args.has("body");
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok2 = ok.clone();
    let task = http::get(&url, move |t: &mut http::ClientTask, _: &mut Series| {
        let timings = t.timings();
        match t.result() {
            Ok(resp) => {
                println!("HTTP/1.1 {} {}", resp.status(), resp.reason());
                for (name, value) in resp.headers().iter() {
                    println!("{name}: {}", String::from_utf8_lossy(value));
                }
                println!();
                if show_body {
                    println!("{}", String::from_utf8_lossy(resp.body()));
                }
                println!("body: {} bytes", resp.body().len());
                ok2.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => eprintln!("error: {e}"),
        }
        let ms = |d: Option<std::time::Duration>| {
            d.map_or("-".to_string(), |d| {
                format!("{:.3} ms", d.as_secs_f64() * 1e3)
            })
        };
        println!("dns:        {}", ms(timings.dns));
        println!("connect:    {}", ms(timings.connect));
        println!("tls:        {}", ms(timings.tls));
        println!("first byte: {}", ms(timings.first_byte));
        println!("total:      {}", ms(Some(timings.total)));
        println!("reused:     {}   redirects: {}", t.reused(), t.redirects());
        if let Some(url) = t.url().filter(|_| t.redirects() > 0) {
            let (scheme, authority) = (url.scheme(), url.authority());
            println!("final URL:  {scheme}://{authority}{}", url.target());
        }
    })
    // 0, the library's default, unless --redirects says otherwise.
    .redirect_max(args.get("redirects", 0));
    let task = match args.raw("cacert") {
        Some(ca) => task.config(Arc::new(ClientConfig::default().tls_root_pem(ca))),
        None => task,
    };
    Series::new(task).on_done(move |_| done.done()).start();
    wg.wait();
    if !ok.load(std::sync::atomic::Ordering::SeqCst) {
        std::process::exit(1);
    }
}
