//! Times the GCN + ZCA fit on a CIFAR training set: `cargo run --release -p nin-data --example
//! fit_zca -- PATH [OUT.safetensors]`.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data = args.next().ok_or("usage: fit_zca DATA [OUT]")?;
    let t = Instant::now();
    let cifar = nin_data::load(
        nin_data::Dataset::Cifar10,
        &nin_data::LoadOptions {
            data: Some(data.into()),
            ..Default::default()
        },
    )?;
    println!(
        "loaded {} training images in {:.2?}",
        cifar.train.len(),
        t.elapsed()
    );
    let t = Instant::now();
    let zca = nin_data::Zca::fit(&cifar.train, nin_data::ZcaConfig::PAPER)?;
    println!("fitted GCN + ZCA in {:.2?}", t.elapsed());
    if let Some(out) = args.next() {
        zca.save(std::path::Path::new(&out))?;
        println!("saved {out}");
    }
    Ok(())
}
