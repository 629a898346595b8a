//! A small wget: fetches a URL with an HTTP client task and prints the status,
//! the headers and where the time went (curl's `-w` phases).
//!
//! Redirects are not followed unless asked, as `http::ClientTask` does by
//! default (`redirect_max` 0): a 3xx is printed with its `Location`.
//! `--redirects N` follows up to N of them (301, 302, 303, 307, 308), like
//! curl's `-L --max-redirs N`, and prints the final response.
//!
//! `cargo run --example http_client -- http://127.0.0.1:8080/ [--redirects N] [--body]`

#[path = "common/args.rs"]
mod args;

use taskweave::http;
use taskweave::{Series, WaitGroup};

/// The command line this example accepts.
const SPEC: args::Spec = args::Spec {
    usage: "usage: http_client URL [--redirects 0] [--body]",
    options: &["redirects"],
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
        println!("first byte: {}", ms(timings.first_byte));
        println!("total:      {}", ms(Some(timings.total)));
        println!("reused:     {}   redirects: {}", t.reused(), t.redirects());
        if let Some(url) = t.url().filter(|_| t.redirects() > 0) {
            println!("final URL:  http://{}{}", url.authority(), url.target());
        }
    })
    // 0, the library's default, unless --redirects says otherwise.
    .redirect_max(args.get("redirects", 0));
    Series::new(task).on_done(move |_| done.done()).start();
    wg.wait();
    if !ok.load(std::sync::atomic::Ordering::SeqCst) {
        std::process::exit(1);
    }
}
