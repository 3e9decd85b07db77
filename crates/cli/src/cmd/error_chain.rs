//! An error and its causes as one sentence, each cause said once: many errors already
//! include their source in their own message, which anyhow's `{:#}` would print again.

/// `err` and the causes its messages do not already include, joined by `: `.
pub fn sentence(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that, as most of ours do, says its source in its own message.
    #[derive(Debug)]
    struct Wrapping {
        source: std::io::Error,
    }

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "node config /x: {}", self.source)
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from_raw_os_error(2);
        let err = anyhow::Error::new(Wrapping { source: io }).context("cannot load");
        let text = sentence(&err);
        assert_eq!(text.matches("(os error 2)").count(), 1, "{text}");
        assert!(text.starts_with("cannot load: node config /x: "), "{text}");
        let plain = anyhow::anyhow!("outer").context("top");
        assert_eq!(sentence(&plain), "top: outer");
    }
}
