//! JSON parsed by the browser: `JSON.parse` runs natively, and the decoders in
//! `wschat_protocol` read the parsed object's fields through [`JsonObject`], so the app carries
//! no JSON parser of its own (serde_json's decoder was a fifth of the bundle).

use std::cell::RefCell;

use js_sys::{Array, Object, Reflect, JSON};
use wasm_bindgen::{JsCast, JsValue};
use wschat_protocol::JsonObject;

/// A plain JavaScript object, as `JSON.parse` makes them.
#[derive(Debug, Clone)]
pub struct JsObject(Object);

impl JsObject {
    /// Parses `text`, which must hold a JSON object.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::from_value(JSON::parse(text).ok()?)
    }

    /// Parses `text`, which must hold a JSON array of objects.
    #[must_use]
    pub fn parse_list(text: &str) -> Option<Vec<Self>> {
        objects(JSON::parse(text).ok()?)
    }

    fn from_value(value: JsValue) -> Option<Self> {
        (value.is_object() && !Array::is_array(&value)).then(|| Self(value.unchecked_into()))
    }

    fn get(&self, key: &str) -> JsValue {
        // Only own fields of parsed JSON are asked for; none is named like a prototype's.
        with_key(key, |key| Reflect::get(&self.0, key).unwrap_or(JsValue::UNDEFINED))
    }
}

thread_local! {
    /// Field names as JavaScript strings, made once: a flood reads the same few fields of
    /// thousands of frames, and making the string anew costs a call into JavaScript each time.
    /// The decoders ask for a score of names at most.
    static KEYS: RefCell<Vec<(String, JsValue)>> = const { RefCell::new(Vec::new()) };
}

fn with_key<R>(name: &str, read: impl FnOnce(&JsValue) -> R) -> R {
    KEYS.with_borrow_mut(|keys| {
        let index = keys.iter().position(|(known, _)| known == name).unwrap_or_else(|| {
            keys.push((name.to_owned(), JsValue::from_str(name)));
            keys.len() - 1
        });
        read(&keys[index].1)
    })
}

fn objects(value: JsValue) -> Option<Vec<JsObject>> {
    let array: Array = value.dyn_into().ok()?;
    array.iter().map(JsObject::from_value).collect()
}

impl JsonObject for JsObject {
    fn string(&self, key: &str) -> Option<String> {
        self.get(key).as_string()
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.get(key).as_f64()
    }

    fn boolean(&self, key: &str) -> Option<bool> {
        self.get(key).as_bool()
    }

    fn object(&self, key: &str) -> Option<Self> {
        Self::from_value(self.get(key))
    }

    fn objects(&self, key: &str) -> Option<Vec<Self>> {
        objects(self.get(key))
    }

    fn strings(&self, key: &str) -> Option<Vec<String>> {
        let array: Array = self.get(key).dyn_into().ok()?;
        array.iter().map(|item| item.as_string()).collect()
    }

    fn has(&self, key: &str) -> bool {
        !self.get(key).is_undefined()
    }
}
