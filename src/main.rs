//! Entry point of the wschat web app: installs the panic hook and mounts [`wschat::App`].

use leptos::prelude::*;
use wschat::App;

#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

fn main() {
    // Readable panics in the console while developing; release builds leave the hook (and the
    // panic formatting it pulls in) out of the bundle.
    #[cfg(debug_assertions)]
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(|| view! { <App /> });
}
