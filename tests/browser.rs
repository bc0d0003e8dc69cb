//! The app in real browsers (headless Chromium and Firefox) against a real relay, which
//! `cargo xtask test` starts and names in `WSCHAT_TEST_RELAY` at compile time.

#![cfg(target_arch = "wasm32")]

use std::time::Duration;

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::{HtmlButtonElement, HtmlElement, HtmlTextAreaElement};
use wschat::chat_socket::{
    ChatSocket, ChatSocketOptions, ConnectionState, Request, RequestError, SendError,
};
use wschat::outbox::DeliveryState;
use wschat::reconnect::ReconnectPolicy;
use wschat::App;
use wschat_protocol::v1::ServerFrame;

wasm_bindgen_test_configure!(run_in_browser);

/// A running relay's socket URL. Read at compile time: a browser test has no environment.
fn relay() -> String {
    match option_env!("WSCHAT_TEST_RELAY") {
        Some(url) => url.to_owned(),
        None => panic!("WSCHAT_TEST_RELAY is unset: run the browser tests with `cargo xtask test`"),
    }
}

/// A socket URL where nothing listens.
fn dead_relay() -> String {
    match option_env!("WSCHAT_TEST_DEAD_RELAY") {
        Some(url) => url.to_owned(),
        None => {
            panic!("WSCHAT_TEST_DEAD_RELAY is unset: run the browser tests with `cargo xtask test`")
        }
    }
}

/// A port that accepts TCP connections but never answers the WebSocket handshake.
fn silent_relay() -> String {
    match option_env!("WSCHAT_TEST_SILENT_RELAY") {
        Some(url) => url.to_owned(),
        None => panic!(
            "WSCHAT_TEST_SILENT_RELAY is unset: run the browser tests with `cargo xtask test`"
        ),
    }
}

/// A relay this test may stop and start, through `control`.
fn restartable_relay() -> String {
    match option_env!("WSCHAT_TEST_RESTARTABLE_RELAY") {
        Some(url) => url.to_owned(),
        None => panic!(
            "WSCHAT_TEST_RESTARTABLE_RELAY is unset: run the browser tests with `cargo xtask test`"
        ),
    }
}

/// Stops (`"stop"`) or starts (`"start"`) the restartable relay, through the control endpoint
/// that `cargo xtask test` runs beside it; returns once done.
async fn control(action: &str) {
    let base = match option_env!("WSCHAT_TEST_RELAY_CONTROL") {
        Some(url) => url,
        None => panic!(
            "WSCHAT_TEST_RELAY_CONTROL is unset: run the browser tests with `cargo xtask test`"
        ),
    };
    let answer =
        wasm_bindgen_futures::JsFuture::from(window().fetch_with_str(&format!("{base}/{action}")))
            .await
            .expect("the relay control endpoint answers");
    let response: web_sys::Response = answer.unchecked_into();
    assert!(response.ok(), "the relay control endpoint could not {action} the relay");
}

/// Options for a tab named `source` plus a random suffix: the tests run concurrently against
/// one relay that keeps its history (across both browsers' runs), so each tab has a name of its
/// own and each test looks only at its own tabs' messages.
fn options(url: String, source: &str) -> ChatSocketOptions {
    ChatSocketOptions::new(url, unique(source))
}

fn unique(name: &str) -> String {
    format!("{name}-{:06}", (js_sys::Math::random() * 1e6) as u32)
}

fn name_of(socket: &ChatSocket) -> String {
    socket.source.get_untracked()
}

fn page_name(page: &HtmlElement) -> String {
    by_testid::<web_sys::HtmlInputElement>(page, "display-name").value()
}

async fn sleep(milliseconds: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        window()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, milliseconds)
            .expect("setTimeout is always available in a window");
    });
    wasm_bindgen_futures::JsFuture::from(promise).await.expect("a timer promise never rejects");
}

/// Waits for `condition`, polling; gives up after 15 s, which only a broken app needs.
async fn until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..750 {
        if condition() {
            return;
        }
        sleep(20).await;
    }
    panic!("gave up waiting for {what}");
}

/// Opens a chat socket under its own reactive owner, like another tab would.
fn open_socket(options: ChatSocketOptions) -> (Owner, ChatSocket) {
    // A root of its own: a child of whatever owner happens to be current (another test's page)
    // would be cleaned up, closing this socket, when that other test ends.
    let owner = Owner::new_root(None);
    let socket = owner.with(|| ChatSocket::open(options));
    (owner, socket)
}

/// Mounts the whole app in a fresh container and returns the container.
fn mount_app(options: ChatSocketOptions) -> (HtmlElement, impl Drop) {
    let container: HtmlElement = document().create_element("div").unwrap().unchecked_into();
    document().body().unwrap().append_child(&container).unwrap();
    let handle = leptos::mount::mount_to(container.clone(), move || view! { <App options /> });
    (container, handle)
}

fn by_testid<T: JsCast>(container: &HtmlElement, testid: &str) -> T {
    container
        .query_selector(&format!("[data-testid={testid}]"))
        .unwrap()
        .unwrap_or_else(|| panic!("no element with data-testid={testid}"))
        .dyn_into()
        .unwrap_or_else(|_| panic!("data-testid={testid} has an unexpected element type"))
}

fn list_texts(container: &HtmlElement, testid: &str) -> Vec<(String, String)> {
    let items = container.query_selector_all(&format!("[data-testid={testid}] > li")).unwrap();
    (0..items.length())
        .map(|n| {
            let item: HtmlElement = items.get(n).unwrap().unchecked_into();
            let part = |class: &str| {
                item.query_selector(class).unwrap().and_then(|node| node.text_content()).unwrap()
            };
            (part(".source"), part(".content"))
        })
        .collect()
}

/// The entries of a list sent under `source`. The tests run concurrently against one relay, so
/// each test looks only at the messages of its own (uniquely named) tabs.
fn list_from(container: &HtmlElement, testid: &str, source: &str) -> Vec<String> {
    list_texts(container, testid)
        .into_iter()
        .filter(|(from, _)| from == source)
        .map(|(_, content)| content)
        .collect()
}

fn received_from(socket: &ChatSocket, source: &str) -> Vec<String> {
    socket.with_session(|session| {
        session
            .shown()
            .conversation
            .messages()
            .filter(|entry| entry.message.source == source)
            .map(|entry| entry.message.content.clone())
            .collect()
    })
}

fn status(container: &HtmlElement) -> String {
    by_testid::<HtmlElement>(container, "connection-status").text_content().unwrap()
}

/// Types into the composer as a user would: set the text, then fire the `input` event.
fn type_into(textarea: &HtmlTextAreaElement, text: &str) {
    textarea.set_value(text);
    let init = web_sys::EventInit::new();
    init.set_bubbles(true);
    let input = web_sys::Event::new_with_event_init_dict("input", &init).unwrap();
    textarea.dispatch_event(&input).unwrap();
}

/// Presses a key in the composer.
fn press(textarea: &HtmlTextAreaElement, key: &str, shift: bool) {
    let init = web_sys::KeyboardEventInit::new();
    init.set_key(key);
    init.set_shift_key(shift);
    init.set_bubbles(true);
    init.set_cancelable(true);
    let event =
        web_sys::KeyboardEvent::new_with_keyboard_event_init_dict("keydown", &init).unwrap();
    textarea.dispatch_event(&event).unwrap();
}

/// The page has the tutorial's structure: a heading, a textarea, a "Send Message" button, the two
/// lists, and a status badge that turns "connected" once the relay answers.
#[wasm_bindgen_test]
async fn page_has_the_tutorial_structure() {
    let (page, _app) = mount_app(options(relay(), "structure"));
    assert_eq!(page.query_selector("h1").unwrap().unwrap().text_content().unwrap(), "wschat");
    let _: HtmlTextAreaElement = by_testid(&page, "composer");
    let send: HtmlButtonElement = by_testid(&page, "send");
    assert_eq!(send.text_content().unwrap(), "Send Message");
    for list in ["sent-list", "received-list"] {
        let element: HtmlElement = by_testid(&page, list);
        assert_eq!(element.tag_name(), "UL");
        assert!(list_texts(&page, list).is_empty());
    }
    let headings = page.query_selector_all("h2").unwrap();
    let titles: Vec<_> =
        (0..headings.length()).map(|n| headings.get(n).unwrap().text_content().unwrap()).collect();
    // The rooms, the room shown, and in it the tutorial's two lists.
    assert_eq!(titles, ["Rooms", "#lobby", "Sent Messages", "Received Messages"]);
    until("the badge to say connected", || status(&page) == "connected").await;
    assert!(!send.disabled());
}

/// Typing in one tab and pressing Send lists the message under "Sent Messages" and clears the box;
/// another tab receives it; that tab's reply appears under "Received Messages".
#[wasm_bindgen_test]
async fn sending_and_receiving_through_the_page() {
    let (page, _app) = mount_app(options(relay(), "page-tab"));
    let (_other_owner, other) = open_socket(options(relay(), "other-tab"));
    until("the page to connect", || status(&page) == "connected").await;
    until("the other tab to connect", || other.state.get_untracked() == ConnectionState::Open)
        .await;
    let (page_tab, other_tab) = (page_name(&page), name_of(&other));

    let composer: HtmlTextAreaElement = by_testid(&page, "composer");
    type_into(&composer, "hello from the page");
    by_testid::<HtmlButtonElement>(&page, "send").click();
    until("the message under Sent", || !list_texts(&page, "sent-list").is_empty()).await;
    assert_eq!(
        list_texts(&page, "sent-list"),
        [(page_tab.clone(), "hello from the page".to_owned())]
    );
    assert_eq!(composer.value(), "", "the box clears after a send");
    until("the other tab to receive it", || !received_from(&other, &page_tab).is_empty()).await;
    assert_eq!(received_from(&other, &page_tab), ["hello from the page"]);
    until("the relay's ack", || sent_state(&page, 0) == "delivered").await;

    other.send("hello back").unwrap();
    until("the reply under Received", || !list_from(&page, "received-list", &other_tab).is_empty())
        .await;
    assert_eq!(list_from(&page, "received-list", &other_tab), ["hello back"]);
}

/// Enter sends; Shift+Enter does not (it is for a new line); a blank message is never sent.
#[wasm_bindgen_test]
async fn enter_sends_and_blank_messages_are_not_sent() {
    let (page, _app) = mount_app(options(relay(), "keyboard"));
    until("the page to connect", || status(&page) == "connected").await;
    let composer: HtmlTextAreaElement = by_testid(&page, "composer");

    type_into(&composer, "   \n  ");
    press(&composer, "Enter", false);
    by_testid::<HtmlButtonElement>(&page, "send").click();
    sleep(100).await;
    assert!(list_texts(&page, "sent-list").is_empty(), "blank messages are not sent");

    type_into(&composer, "two\nlines");
    press(&composer, "Enter", true);
    sleep(100).await;
    assert!(list_texts(&page, "sent-list").is_empty(), "Shift+Enter does not send");
    press(&composer, "Enter", false);
    until("Enter to send", || !list_texts(&page, "sent-list").is_empty()).await;
    assert_eq!(list_texts(&page, "sent-list")[0].1, "two\nlines");
}

/// Content is shown as text: markup from another tab is displayed, never run or rendered.
#[wasm_bindgen_test]
async fn content_is_rendered_as_text_never_as_html() {
    let (page, _app) = mount_app(options(relay(), "victim"));
    let (_owner, attacker) = open_socket(options(relay(), "<b>attacker</b>"));
    let attacker_name = name_of(&attacker);
    until("the page to connect", || status(&page) == "connected").await;
    until("the attacker to connect", || attacker.state.get_untracked() == ConnectionState::Open)
        .await;
    let payload = "<img src=x onerror=\"document.title='pwned'\">";
    attacker.send(payload).unwrap();
    until("the payload to arrive", || {
        !list_from(&page, "received-list", &attacker_name).is_empty()
    })
    .await;
    assert_eq!(list_from(&page, "received-list", &attacker_name), [payload]);
    assert!(page.query_selector("[data-testid=received-list] img").unwrap().is_none());
    assert!(page.query_selector("[data-testid=received-list] b").unwrap().is_none());
    assert_ne!(document().title(), "pwned");
}

/// The service's state signal follows the socket: connecting, then open, then closed. What is
/// sent while not open waits in the outbox as pending and is delivered once the socket opens.
#[wasm_bindgen_test]
async fn state_follows_open_and_close_and_the_outbox_waits() {
    let (_owner, socket) = open_socket(options(relay(), "stateful"));
    assert_eq!(socket.state.get_untracked(), ConnectionState::Connecting);
    socket.send("typed while connecting").unwrap();
    assert_eq!(outbox_states(&socket), ["pending"]);
    until("open", || socket.state.get_untracked() == ConnectionState::Open).await;
    until("delivered", || outbox_states(&socket) == ["delivered"]).await;
    assert_eq!(socket.send(" \t\n"), Err(SendError::Blank));

    socket.close();
    until("closed", || socket.state.get_untracked() == ConnectionState::Closed).await;
    assert_eq!(socket.state.get_untracked().label(), "disconnected");
    socket.send("typed while closed").unwrap();
    sleep(200).await;
    assert_eq!(outbox_states(&socket), ["delivered", "pending"], "it waits for the user");
    socket.reconnect_now();
    until("open again", || socket.state.get_untracked() == ConnectionState::Open).await;
    until("both delivered", || outbox_states(&socket) == ["delivered", "delivered"]).await;
}

/// A message the relay would refuse is refused before it is queued, saying why; the page keeps
/// the text in the box.
#[wasm_bindgen_test]
async fn unacceptable_messages_are_refused_up_front() {
    let (page, _app) = mount_app(options(relay(), "too-long"));
    until("the page to connect", || status(&page) == "connected").await;
    let composer: HtmlTextAreaElement = by_testid(&page, "composer");
    let long = "x".repeat(10_001);
    type_into(&composer, &long);
    by_testid::<HtmlButtonElement>(&page, "send").click();
    sleep(100).await;
    assert!(list_texts(&page, "sent-list").is_empty());
    assert_eq!(composer.value(), long, "the text stays in the box");
    let problem = page.query_selector(".send-problem").unwrap().expect("the reason is shown");
    assert!(problem.text_content().unwrap().contains("more than 10000 characters"));
}

/// Until the relay answers the handshake, the socket is "connecting", never "open", and what is
/// sent waits in the outbox.
#[wasm_bindgen_test]
async fn unanswered_handshake_stays_connecting() {
    let (_owner, socket) = open_socket(options(silent_relay(), "patient"));
    socket.send("hello?").unwrap();
    sleep(500).await;
    assert_eq!(socket.state.get_untracked(), ConnectionState::Connecting);
    assert_eq!(outbox_states(&socket), ["pending"]);
}

/// A relay that is not there: the service keeps retrying with back-off, says why, and the page
/// offers "Reconnect now".
#[wasm_bindgen_test]
async fn unreachable_relay_is_retried_with_back_off() {
    let (page, _app) = mount_app(options(dead_relay(), "lonely"));
    until("reconnecting", || status(&page) == "reconnecting").await;
    let countdown: HtmlElement = by_testid(&page, "retry-countdown");
    assert!(
        countdown.text_content().unwrap().starts_with("attempt "),
        "{:?}",
        countdown.text_content()
    );
    let _: HtmlButtonElement = by_testid(&page, "reconnect");
    let error: HtmlElement = by_testid(&page, "relay-error");
    let error = error.text_content().unwrap();
    assert!(error.contains("cannot be reached"), "{error}");
    assert!(!error.contains("code"), "no close codes for users: {error}");
}

/// Given several relays, the page tries the next after each lost connection: the first one here
/// is dead, the second answers, and messages go through it.
#[wasm_bindgen_test]
async fn the_next_relay_of_a_list_is_tried() {
    let (_owner, socket) = open_socket(options(format!("{}, {}", dead_relay(), relay()), "rover"));
    until("open on the second relay", || socket.state.get_untracked() == ConnectionState::Open)
        .await;
    socket.send("through the second").unwrap();
    until("delivered", || outbox_states(&socket) == ["delivered"]).await;
}

/// A new tab shows recent history: what was said before it opened, once each, in order.
#[wasm_bindgen_test]
async fn a_new_tab_shows_recent_history() {
    let (_owner, early) = open_socket(options(relay(), "early"));
    until("open", || early.state.get_untracked() == ConnectionState::Open).await;
    for n in 0..3 {
        early.send(&format!("before you came {n}")).unwrap();
    }
    until("delivered", || outbox_states(&early).iter().all(|state| *state == "delivered")).await;
    let (_late_owner, late) = open_socket(options(relay(), "late"));
    let early_name = name_of(&early);
    until("the history", || received_from(&late, &early_name).len() == 3).await;
    let expected: Vec<_> = (0..3).map(|n| format!("before you came {n}")).collect();
    assert_eq!(received_from(&late, &early_name), expected);
}

/// `request` resolves with the correlated reply, or says the socket is not connected.
#[wasm_bindgen_test]
async fn requests_get_their_replies() {
    let (_owner, socket) = open_socket(options(relay(), "asker"));
    assert_eq!(socket.request(Request::Ping).await, Err(RequestError::Disconnected));
    until("open", || socket.state.get_untracked() == ConnectionState::Open).await;
    assert!(matches!(socket.request(Request::Ping).await, Ok(ServerFrame::Pong { .. })));
    match socket.request(Request::History { after_seq: 0 }).await {
        Ok(ServerFrame::History { complete, .. }) => assert!(complete),
        other => panic!("expected a history answer, got {other:?}"),
    }
}

/// The restartable relay's scenarios, one after the other: they stop, start and pause the same
/// relay, so they must not overlap.
#[wasm_bindgen_test]
async fn the_service_survives_a_frozen_and_a_restarted_relay() {
    an_unanswering_relay_is_detected_and_replaced().await;
    the_service_survives_a_relay_restart().await;
}

/// The relay goes away and comes back: the state goes reconnecting → open, what was typed
/// meanwhile waits as pending and is then delivered, and the other tab receives it once, told
/// that the restarted relay lost its history.
async fn the_service_survives_a_relay_restart() {
    let quick = |source| ChatSocketOptions {
        reconnect: ReconnectPolicy {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            ..ReconnectPolicy::default()
        },
        ..options(restartable_relay(), source)
    };
    let (_a_owner, a) = open_socket(quick("restart-a"));
    let (_b_owner, b) = open_socket(quick("restart-b"));
    for socket in [a, b] {
        until("open", || socket.state.get_untracked() == ConnectionState::Open).await;
    }
    control("stop").await;
    for socket in [a, b] {
        until("reconnecting", || {
            matches!(socket.state.get_untracked(), ConnectionState::Reconnecting { .. })
        })
        .await;
    }
    a.send("typed while the relay was down").unwrap();
    assert_eq!(outbox_states(&a), ["pending"]);

    control("start").await;
    for socket in [a, b] {
        until("open again", || socket.state.get_untracked() == ConnectionState::Open).await;
    }
    until("delivered", || outbox_states(&a) == ["delivered"]).await;
    let a_name = name_of(&a);
    until("the other tab to receive it", || !received_from(&b, &a_name).is_empty()).await;
    sleep(200).await;
    assert_eq!(received_from(&b, &a_name), ["typed while the relay was down"], "exactly once");
    let notice = b.received.notice.get_untracked().map(|notice| notice.text());
    assert!(
        notice.as_ref().is_some_and(|notice| notice.contains("lost its history")),
        "{notice:?}"
    );
}

/// A relay that stops answering while the connection stays open (a half-open connection, as after
/// a laptop sleeps): a request times out, the heartbeat declares the socket dead and replaces it,
/// and once the relay answers again the service is open again.
async fn an_unanswering_relay_is_detected_and_replaced() {
    let patient = ChatSocketOptions {
        heartbeat_interval: Duration::from_secs(60),
        reply_timeout: Duration::from_millis(300),
        ..options(restartable_relay(), "patient")
    };
    let watchful = ChatSocketOptions {
        heartbeat_interval: Duration::from_millis(200),
        reply_timeout: Duration::from_millis(300),
        reconnect: ReconnectPolicy {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            ..ReconnectPolicy::default()
        },
        ..options(restartable_relay(), "watchful")
    };
    let (_p_owner, patient) = open_socket(patient);
    let (_w_owner, watchful) = open_socket(watchful);
    for socket in [patient, watchful] {
        until("open", || socket.state.get_untracked() == ConnectionState::Open).await;
    }
    control("pause").await;
    let answer = patient.request(Request::Ping).await;
    until("the heartbeat to notice", || {
        matches!(watchful.state.get_untracked(), ConnectionState::Reconnecting { .. })
    })
    .await;
    control("resume").await;
    assert_eq!(answer, Err(RequestError::Timeout));
    until("open again", || watchful.state.get_untracked() == ConnectionState::Open).await;
    let error = watchful.last_error.get_untracked();
    assert!(error.is_none(), "a good connection clears the error: {error:?}");
}

fn outbox_states(socket: &ChatSocket) -> Vec<&'static str> {
    socket.with_session(|session| {
        session
            .outbox
            .entries()
            .iter()
            .map(|message| match message.state {
                DeliveryState::Pending => "pending",
                DeliveryState::Sent => "sent",
                DeliveryState::Delivered { .. } => "delivered",
                DeliveryState::Failed { .. } => "failed",
            })
            .collect()
    })
}

/// The `data-state` of the n-th entry in the page's "Sent Messages".
fn sent_state(page: &HtmlElement, n: u32) -> String {
    let items = page.query_selector_all("[data-testid=sent-list] > li").unwrap();
    items
        .get(n)
        .and_then(|item| item.unchecked_into::<HtmlElement>().get_attribute("data-state"))
        .unwrap_or_default()
}

/// Options with the outbox kept in localStorage under a base of this test's own, as tab `tab`.
fn stored_options(url: String, source: &str, base: &str, tab: &str) -> ChatSocketOptions {
    ChatSocketOptions {
        storage_key: Some(base.to_owned()),
        tab: Some(tab.to_owned()),
        ..options(url, source)
    }
}

fn local_storage() -> web_sys::Storage {
    window().local_storage().unwrap().unwrap()
}

/// The contents of the messages saved undelivered under `key`.
fn saved_contents(key: &str) -> Vec<String> {
    let Some(text) = local_storage().get_item(key).unwrap() else { return Vec::new() };
    let saved: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    saved.iter().map(|message| message["content"].as_str().unwrap().to_owned()).collect()
}

/// A tab closed with messages still pending leaves them behind; the next tab of the site adopts
/// them, sends them, and forgets the closed tab's copy.
#[wasm_bindgen_test]
async fn a_closed_tabs_pending_messages_are_sent_by_the_next_tab() {
    let base = unique("wschat.test-orphan");
    let (closed, a) = open_socket(stored_options(dead_relay(), "orphan", &base, "closed"));
    a.send("left behind 1").unwrap();
    a.send("left behind 2").unwrap();
    let name = name_of(&a);
    assert_eq!(saved_contents(&format!("{base}.closed")), ["left behind 1", "left behind 2"]);
    closed.cleanup();
    // Released long enough ago: not a reload in progress.
    local_storage().set_item(&format!("{base}.closed.owner"), "released 0").unwrap();

    let (_next, b) = open_socket(stored_options(relay(), "next", &base, "next"));
    until("the adopted messages delivered", || outbox_states(&b) == ["delivered", "delivered"])
        .await;
    let (_reader, reader) = open_socket(options(relay(), "reader"));
    until("another tab to receive them", || received_from(&reader, &name).len() == 2).await;
    assert_eq!(received_from(&reader, &name), ["left behind 1", "left behind 2"]);
    assert!(local_storage().get_item(&format!("{base}.closed")).unwrap().is_none());
}

/// "Duplicate tab" copies the tab's id: the copy notices that a live page holds that outbox and
/// takes one of its own, so the two never write over each other's pending messages.
#[wasm_bindgen_test]
async fn a_duplicated_tab_gets_an_outbox_of_its_own() {
    let base = unique("wschat.test-duplicate");
    let (_original, a) = open_socket(stored_options(dead_relay(), "original", &base, "same"));
    let (_copy, b) = open_socket(stored_options(dead_relay(), "copy", &base, "same"));
    a.send("from the original").unwrap();
    b.send("from the copy").unwrap();
    assert_eq!(saved_contents(&format!("{base}.same")), ["from the original"]);
    let storage = local_storage();
    let prefix = format!("{base}.");
    let others: Vec<String> = (0..storage.length().unwrap())
        .filter_map(|index| storage.key(index).unwrap())
        .filter(|key| key.starts_with(&prefix) && !key[prefix.len()..].contains('.'))
        .filter(|key| *key != format!("{base}.same"))
        .collect();
    assert_eq!(others.len(), 1, "{others:?}");
    assert_eq!(saved_contents(&others[0]), ["from the copy"]);
}

/// When the browser's storage is full, the page says that waiting messages would not survive a
/// reload (they are still sent), and stops saying so once saving works again.
#[wasm_bindgen_test]
async fn a_full_storage_is_shown_on_the_page() {
    let base = unique("wschat.test-quota");
    let storage = local_storage();
    // Fill the quota with 256 KiB blocks, then smaller ones.
    let mut filler = Vec::new();
    for size in [262_144, 16_384, 1_024, 64] {
        let block = "x".repeat(size);
        loop {
            let key = format!("{base}.filler{}", filler.len());
            if storage.set_item(&key, &block).is_err() {
                break;
            }
            filler.push(key);
        }
    }
    let (page, _app) = mount_app(stored_options(relay(), "quota", &base, "full"));
    type_into(&by_testid(&page, "composer"), "a message too many for the storage");
    by_testid::<HtmlButtonElement>(&page, "send").click();
    until("the storage problem shown", || {
        page.query_selector("[data-testid=storage-problem]").unwrap().is_some()
    })
    .await;
    until("the message delivered anyway", || sent_state(&page, 0) == "delivered").await;
    for key in filler {
        storage.remove_item(&key).unwrap();
    }
    type_into(&by_testid(&page, "composer"), "room again");
    by_testid::<HtmlButtonElement>(&page, "send").click();
    until("the notice gone", || {
        page.query_selector("[data-testid=storage-problem]").unwrap().is_none()
    })
    .await;
}

/// Saved outbox text that cannot be read (a damaged or foreign value) is set aside under
/// `.unreadable`, never trusted nor silently lost, and the tab starts with an empty outbox that
/// works.
#[wasm_bindgen_test]
async fn unreadable_saved_messages_are_set_aside() {
    let base = unique("wschat.test-unreadable");
    let storage = local_storage();
    let damaged = r#"[{"id":"x","source":"s","content":"half a mess"#;
    storage.set_item(&format!("{base}.tab"), damaged).unwrap();
    let (_owner, socket) = open_socket(stored_options(relay(), "unreadable", &base, "tab"));
    assert_eq!(
        storage.get_item(&format!("{base}.tab.unreadable")).unwrap().as_deref(),
        Some(damaged)
    );
    assert!(outbox_states(&socket).is_empty(), "nothing of the damaged text was trusted");
    socket.send("after the damage").unwrap();
    until("the new message delivered", || outbox_states(&socket) == ["delivered"]).await;
    assert_eq!(
        storage.get_item(&format!("{base}.tab.unreadable")).unwrap().as_deref(),
        Some(damaged)
    );
}

/// A room name unique to one test (the tests share one relay).
fn unique_room(name: &str) -> String {
    format!("{name}-{:06}", (js_sys::Math::random() * 1e6) as u32)
}

/// Options for a tab that opens in `room`.
fn room_options(url: String, source: &str, room: &str) -> ChatSocketOptions {
    ChatSocketOptions { room: Some(room.to_owned()), ..options(url, source) }
}

/// The `room-item` of `room` in a page.
fn room_item(page: &HtmlElement, room: &str) -> HtmlElement {
    page.query_selector(&format!("[data-testid=room-item][data-room=\"{room}\"]"))
        .unwrap()
        .unwrap_or_else(|| panic!("no room item for {room}"))
        .unchecked_into()
}

fn unread(page: &HtmlElement, room: &str) -> String {
    by_testid::<HtmlElement>(&room_item(page, room), "unread-count").text_content().unwrap()
}

fn names_present(page: &HtmlElement) -> Vec<String> {
    let items = page.query_selector_all("[data-testid=presence-list] > li").unwrap();
    (0..items.length()).filter_map(|n| items.get(n).and_then(|item| item.text_content())).collect()
}

/// Two tabs in different rooms do not see each other's messages; a third tab in both sees each
/// in its room, with the unread count of the room not shown rising, and clearing once shown.
#[wasm_bindgen_test]
async fn rooms_keep_conversations_apart_with_unread_counts() {
    let (one, two) = (unique_room("one"), unique_room("two"));
    let (_a_owner, a) = open_socket(room_options(relay(), "room-a", &one));
    let (_b_owner, b) = open_socket(room_options(relay(), "room-b", &two));
    let (page, _app) = mount_app(room_options(relay(), "room-c", &one));
    until("the page to connect", || status(&page) == "connected").await;
    let join: web_sys::HtmlInputElement = by_testid(&page, "room-join");
    join.set_value(&two.to_uppercase());
    join.dispatch_event(&web_sys::Event::new("input").unwrap()).unwrap();
    by_testid::<HtmlButtonElement>(&page, "room-join-button").click();
    until("the second room shown", || {
        by_testid::<HtmlElement>(&page, "current-room").text_content().unwrap() == format!("#{two}")
    })
    .await;
    until("both rooms joined", || {
        a.state.get_untracked().is_open() && b.state.get_untracked().is_open()
    })
    .await;
    // The relay confirms the page's join before the others speak.
    for _ in 0..250 {
        if socket_rooms_joined(&page) == 3 {
            break;
        }
        sleep(20).await;
    }
    assert_eq!(socket_rooms_joined(&page), 3, "rooms: {}", page.inner_html());

    a.send("said in one").unwrap();
    b.send("said in two").unwrap();
    let name_b = name_of(&b);
    until("the page to list the message of room two", || {
        list_from(&page, "received-list", &name_b) == ["said in two"]
    })
    .await;
    until("room one's unread count", || unread(&page, &one) == "1").await;
    assert_eq!(unread(&page, &two), "", "the room shown counts nothing");
    sleep(300).await;
    assert!(received_from(&b, &name_of(&a)).is_empty(), "room two never sees room one");
    assert!(received_from(&a, &name_b).is_empty(), "room one never sees room two");

    let button = room_item(&page, &one).query_selector("button").unwrap().unwrap();
    button.unchecked_into::<HtmlButtonElement>().click();
    until("room one shown with its message", || {
        list_from(&page, "received-list", &name_of(&a)) == ["said in one"]
    })
    .await;
    assert_eq!(unread(&page, &one), "");
    assert!(list_from(&page, "received-list", &name_b).is_empty());
}

/// How many rooms of the page's room list the relay confirmed.
fn socket_rooms_joined(page: &HtmlElement) -> usize {
    page.query_selector_all("[data-testid=room-item][data-joined=true]").unwrap().length() as usize
}

/// Presence lists both names in a room and drops a tab that closes; "is typing" shows the other
/// tab's name and goes when its message arrives.
#[wasm_bindgen_test]
async fn presence_and_typing_follow_the_other_tab() {
    let room = unique_room("presence");
    let (page, _app) = mount_app(room_options(relay(), "here", &room));
    let (other_owner, other) = open_socket(room_options(relay(), "there", &room));
    let them = name_of(&other);
    until("the page's name", || !page_name(&page).is_empty()).await;
    let me = page_name(&page);
    for _ in 0..250 {
        let names = names_present(&page);
        if names.contains(&me) && names.contains(&them) {
            break;
        }
        sleep(20).await;
    }
    let names = names_present(&page);
    assert!(names.contains(&me) && names.contains(&them), "{me}, {them}: {names:?}");
    other.typing();
    until("the typing line", || {
        by_testid::<HtmlElement>(&page, "typing").text_content().unwrap().contains(&them)
    })
    .await;
    other.send("done typing").unwrap();
    until("the typing line gone with the message", || {
        by_testid::<HtmlElement>(&page, "typing").text_content().unwrap().is_empty()
    })
    .await;
    other_owner.cleanup();
    until("the closed tab gone from presence", || !names_present(&page).contains(&them)).await;
    assert!(names_present(&page).contains(&me));
}

/// The tutorial's client (a plain socket, no subprotocol, `{source, content}` frames) is in the
/// lobby: it and the app's lobby chat both ways, and a room's messages never reach it.
#[wasm_bindgen_test]
async fn the_tutorial_client_chats_with_the_app_in_the_lobby() {
    use futures::{SinkExt, StreamExt};
    use gloo_net::websocket::{futures::WebSocket, Message};

    let (page, _app) = mount_app(options(relay(), "lobby-app"));
    until("the page to connect", || status(&page) == "connected").await;
    let (_room_owner, elsewhere) = open_socket(room_options(relay(), "roomy", &unique_room("x")));
    let mut tutorial = WebSocket::open(&relay()).unwrap();
    let tutor = unique("tutor");
    let frame = serde_json::json!({ "source": tutor, "content": "hello from the tutorial" });
    tutorial.send(Message::Text(frame.to_string())).await.unwrap();
    until("the app's lobby to list it", || {
        list_from(&page, "received-list", &tutor) == ["hello from the tutorial"]
    })
    .await;
    until("the room tab connected", || elsewhere.state.get_untracked().is_open()).await;
    elsewhere.send("not for the lobby").unwrap();
    type_into(&by_testid(&page, "composer"), "hello tutorial");
    by_testid::<HtmlButtonElement>(&page, "send").click();
    let me = page_name(&page);
    // Other tests chat in the lobby too: read until the app's message arrives.
    loop {
        let Some(Ok(Message::Text(text))) = tutorial.next().await else {
            panic!("the tutorial socket closed")
        };
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_ne!(frame["content"], "not for the lobby", "a room's message reached the lobby");
        if frame["source"] == me.as_str() {
            assert_eq!(frame["content"], "hello tutorial");
            break;
        }
    }
}

/// The page's screen-reader announcement of what arrives live (a visually hidden status).
fn announced(page: &HtmlElement) -> String {
    page.query_selector(".sr-only[role=status]")
        .unwrap()
        .expect("the page has a live announcement")
        .text_content()
        .unwrap_or_default()
}

/// Watches the announcement for `milliseconds`, every 10 ms; returns each text it showed, in
/// order (the starting text excluded).
async fn announcements_during(page: &HtmlElement, milliseconds: i32) -> Vec<String> {
    let mut seen = Vec::new();
    let mut last = announced(page);
    for _ in 0..milliseconds / 10 {
        sleep(10).await;
        let now = announced(page);
        if now != last {
            seen.push(now.clone());
            last = now;
        }
    }
    seen
}

/// A screen reader hears what others say as it arrives: a burst once, counted, with the newest
/// message read out; never the history shown on joining a room, never the user's own messages.
#[wasm_bindgen_test]
async fn live_messages_are_announced_once_per_burst() {
    let room = unique_room("heard");
    let (_other_owner, other) = open_socket(room_options(relay(), "speaker", &room));
    until("the other tab to connect", || other.state.get_untracked().is_open()).await;
    other.send("said before you came").unwrap();
    until("delivered", || outbox_states(&other) == ["delivered"]).await;
    let speaker = name_of(&other);

    // Opened in the lobby, then into the room, whose history shows (and is not announced).
    let (page, _app) = mount_app(options(relay(), "listener"));
    until("the page to connect", || status(&page) == "connected").await;
    let join: web_sys::HtmlInputElement = by_testid(&page, "room-join");
    join.set_value(&room);
    join.dispatch_event(&web_sys::Event::new("input").unwrap()).unwrap();
    by_testid::<HtmlButtonElement>(&page, "room-join-button").click();
    until("the history", || list_from(&page, "received-list", &speaker).len() == 1).await;
    let composer: HtmlTextAreaElement = by_testid(&page, "composer");
    type_into(&composer, "my own words");
    by_testid::<HtmlButtonElement>(&page, "send").click();
    until("my message delivered", || sent_state(&page, 0) == "delivered").await;
    assert_eq!(announcements_during(&page, 1_500).await, Vec::<String>::new());

    for n in 1..=5 {
        other.send(&format!("burst {n}")).unwrap();
    }
    let heard = announcements_during(&page, 2_500).await;
    assert_eq!(heard, [format!("5 new messages; the latest, {speaker}: burst 5")]);

    other.send("and one more").unwrap();
    let heard = announcements_during(&page, 2_000).await;
    assert_eq!(heard, [format!("{speaker}: and one more")]);
}

/// After clicking Send the focus is back in the message box, ready for the next message.
#[wasm_bindgen_test]
async fn the_focus_returns_to_the_message_box_after_send() {
    let (page, _app) = mount_app(options(relay(), "focused"));
    until("the page to connect", || status(&page) == "connected").await;
    let composer: HtmlTextAreaElement = by_testid(&page, "composer");
    type_into(&composer, "sent with the button");
    let send: HtmlButtonElement = by_testid(&page, "send");
    // As a click would: the button takes the focus, then fires.
    send.focus().unwrap();
    send.click();
    until("the message under Sent", || !list_texts(&page, "sent-list").is_empty()).await;
    let focused = document().active_element().expect("something has the focus");
    assert_eq!(focused, composer.unchecked_into::<web_sys::Element>());
}

/// Puts the app's stylesheet in the test page (once): the pane's behaviour is the CSS's.
fn with_the_apps_css() {
    if document().query_selector("style[data-app-css]").unwrap().is_some() {
        return;
    }
    let style = document().create_element("style").unwrap();
    style.set_attribute("data-app-css", "").unwrap();
    style.set_text_content(Some(include_str!("../style/main.css")));
    document().head().unwrap().append_child(&style).unwrap();
}

/// The received list's pane: the section around the list, which scrolls.
fn pane(page: &HtmlElement) -> HtmlElement {
    by_testid::<HtmlElement>(page, "received-list").parent_element().unwrap().unchecked_into()
}

fn new_messages_offered(page: &HtmlElement) -> bool {
    !by_testid::<HtmlElement>(page, "new-messages").hidden()
}

/// The conversation scrolls in a pane that stays on the newest message as messages arrive;
/// scrolled up to read, the reader stays where they are and is offered "New messages ↓", which
/// takes them to the newest and puts the focus in the pane.
#[wasm_bindgen_test]
async fn the_conversation_follows_the_newest_and_offers_new_messages_when_scrolled_up() {
    with_the_apps_css();
    let room = unique_room("pane");
    let (_other_owner, other) = open_socket(room_options(relay(), "chatty", &room));
    let (page, _app) = mount_app(room_options(relay(), "reader", &room));
    until("both connected", || {
        other.state.get_untracked().is_open() && status(&page) == "connected"
    })
    .await;
    let chatty = name_of(&other);
    for n in 1..=40 {
        other.send(&format!("line {n}")).unwrap();
    }
    until("the 40 lines", || list_from(&page, "received-list", &chatty).len() == 40).await;
    sleep(100).await;
    let pane = pane(&page);
    assert!(pane.scroll_height() > pane.client_height() + 100, "the pane scrolls");
    let newest = || {
        let rows = page.query_selector_all("[data-testid=received-list] > li").unwrap();
        rows.get(rows.length() - 1).unwrap().unchecked_into::<HtmlElement>()
    };
    let bottom = |element: &HtmlElement| element.get_bounding_client_rect().bottom();
    let shows_newest = || bottom(&newest()) <= bottom(&pane) + 1.0;
    assert!(shows_newest(), "the pane shows the newest line");
    other.send("line 41").unwrap();
    until("line 41 shown at the bottom", || {
        list_from(&page, "received-list", &chatty).len() == 41 && shows_newest()
    })
    .await;
    assert!(!new_messages_offered(&page));

    // Scrolled up to read: the reader stays put while more arrive.
    pane.set_scroll_top(-(pane.scroll_height() / 2));
    until("scrolled up", || pane.scroll_top() < -100).await;
    sleep(100).await;
    let top = pane.get_bounding_client_rect().top();
    let first_in_view = || {
        let rows = page.query_selector_all("[data-testid=received-list] > li").unwrap();
        (0..rows.length())
            .map(|n| rows.get(n).unwrap().unchecked_into::<HtmlElement>())
            .find(|row| row.get_bounding_client_rect().bottom() > top)
            .map(|row| (row.text_content().unwrap(), row.get_bounding_client_rect().top()))
    };
    let reading = first_in_view();
    for n in 42..=44 {
        other.send(&format!("line {n}")).unwrap();
    }
    until("the 3 more", || list_from(&page, "received-list", &chatty).len() == 44).await;
    until("\"new messages\" offered", || new_messages_offered(&page)).await;
    sleep(100).await;
    let still = first_in_view();
    assert_eq!(reading.as_ref().map(|(text, _)| text), still.as_ref().map(|(text, _)| text));
    let moved = (reading.unwrap().1 - still.unwrap().1).abs();
    assert!(moved < 2.0, "the line being read moved by {moved} px");
    assert!(!shows_newest());

    by_testid::<HtmlButtonElement>(&page, "new-messages").click();
    until("back at the newest", || shows_newest() && !new_messages_offered(&page)).await;
    assert_eq!(document().active_element(), Some(pane.unchecked_into()));
}
