//! `/docs`: Swagger UI over the listener's `/openapi.json`.
//!
//! Swagger UI's files come from `utoipa-swagger-ui`, whose `vendored`
//! feature takes them from a crate (nothing is downloaded when building)
//! and compiles them in, so the page needs nothing from another origin at
//! run time either. The page itself is ours: a frame with no inline script
//! or style, loading the files by absolute path, so it works at `/docs`
//! without a redirect to `/docs/` (Swagger UI's own `index.html` names its
//! files relative to its folder).

use std::sync::{Arc, LazyLock};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_swagger_ui::Config;

use super::DOCUMENT_PATH;
use crate::http::{PathParam, Problem};

/// The files the page loads: `/docs/<file>`.
pub const ASSETS: [&str; 4] = [
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-initializer.js",
];

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>API documentation</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-ui-standalone-preset.js"></script>
<script src="/docs/swagger-initializer.js"></script>
</body>
</html>
"#;

/// Swagger UI's settings: this listener's document.
static CONFIG: LazyLock<Arc<Config<'static>>> =
    LazyLock::new(|| Arc::new(Config::new([DOCUMENT_PATH])));

pub async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

pub async fn asset(PathParam(file): PathParam<String>) -> Response {
    let Some(file) = ASSETS.into_iter().find(|known| **known == file) else {
        return Problem::not_found(format!("no file {file:?} in /docs")).into_response();
    };
    let content_type = if file.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "text/javascript; charset=utf-8"
    };
    match utoipa_swagger_ui::serve(file, Arc::clone(&CONFIG)) {
        Ok(Some(found)) => (
            [(header::CONTENT_TYPE, content_type)],
            found.bytes.into_owned(),
        )
            .into_response(),
        // Every listed file is in the crate; a test fetches each.
        Ok(None) => Problem::not_found(format!("no file {file:?} in /docs")).into_response(),
        Err(error) => {
            tracing::error!(%error, file, "serving a Swagger UI file failed");
            Problem::internal().into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_file_the_page_loads_is_served_and_points_at_the_document() {
        for file in ASSETS {
            assert!(PAGE.contains(&format!("/docs/{file}")), "{file}");
            let response = asset(PathParam(file.to_owned())).await;
            assert_eq!(response.status(), 200, "{file}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 24)
                .await
                .unwrap();
            assert!(body.len() > 100, "{file}");
            if file == "swagger-initializer.js" {
                let text = String::from_utf8(body.to_vec()).unwrap();
                assert!(text.contains("\"/openapi.json\""), "{text}");
            }
        }
        assert!(!PAGE.contains("<script>"), "no inline script");
        let missing = asset(PathParam("index.html".to_owned())).await;
        assert_eq!(missing.status(), 404);
    }
}
