//! Entry point of the wschat web app: installs the panic hook and mounts [`wschat::App`].

use leptos::prelude::*;
use wschat::App;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(|| view! { <App /> });
}
