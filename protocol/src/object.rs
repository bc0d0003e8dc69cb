//! Decoding from a JSON object that was parsed elsewhere.
//!
//! The browser parses JSON natively (`JSON.parse`); a wasm app that reads the parsed object's
//! fields needs no JSON parser of its own, and serde_json's decoder with the derived visitors was
//! a fifth of the app's code. [`JsonObject`] is the little the decoders here need from such an
//! object; the app implements it over `js_sys::Object`, and [`serde_json::Value`] implements it
//! too, so every decoder is tested natively against the serde one (see `v1`'s tests).

/// Read access to the fields of a parsed JSON object. Each getter answers `None` when the field is
/// missing or has another type.
pub trait JsonObject: Sized {
    /// A string field.
    fn string(&self, key: &str) -> Option<String>;
    /// A number field.
    fn number(&self, key: &str) -> Option<f64>;
    /// A boolean field.
    fn boolean(&self, key: &str) -> Option<bool>;
    /// A field holding an object.
    fn object(&self, key: &str) -> Option<Self>;
    /// A field holding an array of objects (`None` if any element is not an object).
    fn objects(&self, key: &str) -> Option<Vec<Self>>;
    /// A field holding an array of strings (`None` if any element is not a string).
    fn strings(&self, key: &str) -> Option<Vec<String>>;
    /// Whether the field is present (whatever its type).
    fn has(&self, key: &str) -> bool;

    /// A required string field.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field when it is missing or not a string.
    fn required_string(&self, field: &'static str) -> Result<String, DecodeError> {
        self.string(field).ok_or(DecodeError { field, expected: "a string" })
    }

    /// A required whole number from 0 to 2^53 (what a JSON number holds exactly).
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field when it is missing or not such a number.
    fn required_u64(&self, field: &'static str) -> Result<u64, DecodeError> {
        self.optional_u64(field)?.ok_or(DecodeError { field, expected: "a whole number" })
    }

    /// Like [`JsonObject::required_u64`], but `None` when the field is absent.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field when it is present but not such a number.
    fn optional_u64(&self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
        if !self.has(field) {
            return Ok(None);
        }
        match self.number(field) {
            Some(number) if (0.0..=MAX_EXACT).contains(&number) && number.fract() == 0.0 => {
                Ok(Some(number as u64))
            }
            _ => Err(DecodeError { field, expected: "a whole number" }),
        }
    }

    /// Like [`JsonObject::required_string`], but `None` when the field is absent.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field when it is present but not a string.
    fn optional_string(&self, field: &'static str) -> Result<Option<String>, DecodeError> {
        if self.has(field) {
            self.required_string(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A required boolean field.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field when it is missing or not a boolean.
    fn required_bool(&self, field: &'static str) -> Result<bool, DecodeError> {
        self.boolean(field).ok_or(DecodeError { field, expected: "true or false" })
    }

    /// A required field holding an object.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field when it is missing or not an object.
    fn required_object(&self, field: &'static str) -> Result<Self, DecodeError> {
        self.object(field).ok_or(DecodeError { field, expected: "an object" })
    }

    /// A required field holding an array of objects.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field when it is missing or not an array of objects.
    fn required_objects(&self, field: &'static str) -> Result<Vec<Self>, DecodeError> {
        self.objects(field).ok_or(DecodeError { field, expected: "an array of objects" })
    }

    /// A required field holding an array of strings.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field when it is missing or not an array of strings.
    fn required_strings(&self, field: &'static str) -> Result<Vec<String>, DecodeError> {
        self.strings(field).ok_or(DecodeError { field, expected: "an array of strings" })
    }
}

/// Why a parsed object is not the frame it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The field that is missing or has the wrong type (or `type` for an unknown frame type).
    pub field: &'static str,
    /// What was expected there.
    pub expected: &'static str,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: expected {}", self.field, self.expected)
    }
}

impl std::error::Error for DecodeError {}

impl JsonObject for serde_json::Value {
    fn string(&self, key: &str) -> Option<String> {
        self.get(key)?.as_str().map(str::to_owned)
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    fn boolean(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    fn object(&self, key: &str) -> Option<Self> {
        self.get(key).filter(|value| value.is_object()).cloned()
    }

    fn objects(&self, key: &str) -> Option<Vec<Self>> {
        let items = self.get(key)?.as_array()?;
        items.iter().all(serde_json::Value::is_object).then(|| items.clone())
    }

    fn strings(&self, key: &str) -> Option<Vec<String>> {
        self.get(key)?.as_array()?.iter().map(|item| item.as_str().map(str::to_owned)).collect()
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}
