//! The page, its script and style, and the chart library, built into the binary.

/// One file the console serves.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The asset served at `path`, if any.
pub fn find(path: &str) -> Option<Asset> {
    let (content_type, body): (&str, &[u8]) = match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../web/index.html"),
        ),
        "/app.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../web/app.js"),
        ),
        "/app.css" => ("text/css; charset=utf-8", include_bytes!("../web/app.css")),
        "/vendor/chartist.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../web/node_modules/chartist/dist/index.umd.js"),
        ),
        "/vendor/chartist.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../web/node_modules/chartist/dist/index.css"),
        ),
        _ => return None,
    };
    Some(Asset { content_type, body })
}
