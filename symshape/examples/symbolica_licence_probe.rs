//! Shows what unlicensed Symbolica does to a host process: run with
//! `cargo run -p symshape --features symbolica --example symbolica_licence_probe`.
//! Expected without `SYMBOLICA_LICENSE`: a banner on stdout at first use, then the process is
//! aborted when a second thread touches Symbolica.

fn main() {
    use symbolica::prelude::*;
    eprintln!("probe: first use on the main thread");
    let a = parse!("(1 + seq)^2").expand();
    eprintln!("probe: main thread expanded to {a}");
    eprintln!(
        "probe: licence thread limit = {}, rayon global pool threads = {} on {} CPUs",
        symbolica::license::LicenseManager::max_threads(usize::MAX),
        rayon::current_num_threads(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    eprintln!("probe: second use on another thread");
    let r = std::thread::spawn(|| parse!("(2 + past)^2").expand().to_string()).join();
    eprintln!("probe: second thread returned {r:?} (not reached if Symbolica aborted the process)");
}
