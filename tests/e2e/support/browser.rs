//! A real headless Chromium driven over WebDriver: Debian's `chromium` and `chromium-driver`,
//! started per test on a free port, through the `fantoccini` client. A missing browser fails the
//! test with what to install; it never skips.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use super::process::free_port;

/// A running chromedriver with one browser session.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
    /// chromedriver's port and the session, to end it (and the browser) from `Drop`.
    port: u16,
    session: Option<String>,
}

fn chromium_binary() -> &'static str {
    ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or_else(|| {
            panic!(
                "chromium is missing: install Debian's `chromium` and `chromium-driver` \
                 (apt-get install -y chromium chromium-driver; .ci/run does)"
            )
        })
}

impl Browser {
    /// A headless browser whose window is `width` x `height` CSS pixels.
    pub(crate) async fn start(width: u32, height: u32) -> Self {
        let chromium = chromium_binary();
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start chromedriver ({error}): install Debian's `chromium-driver` \
                     (apt-get install -y chromium chromium-driver; .ci/run does)"
                )
            });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let address = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&address)
                .await
            {
                Ok(client) => break client,
                Err(error) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "chromedriver on {address} gave no browser session: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let session = client
            .session_id()
            .await
            .ok()
            .flatten()
            .map(|id| id.to_string());
        let mut browser = Self {
            client,
            driver,
            port,
            session,
        };
        browser.resize(width, height).await;
        browser
    }

    /// Sets the viewport to `width` x `height` (the window is a little larger than its viewport).
    pub(crate) async fn resize(&mut self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize the window");
        let inner = self.viewport().await;
        let (extra_width, extra_height) = (
            width.saturating_sub(inner.0),
            height.saturating_sub(inner.1),
        );
        if extra_width > 0 || extra_height > 0 {
            self.client
                .set_window_size(width + extra_width, height + extra_height)
                .await
                .expect("resize the window");
        }
    }

    async fn viewport(&self) -> (u32, u32) {
        let size = self
            .client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .expect("read the viewport");
        let number = |index: usize| {
            size[index]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        (number(0), number(1))
    }

    /// Opens `url` and waits for its document.
    pub(crate) async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("open a page");
    }

    /// The text of the first element matching `css`, or an empty string.
    pub(crate) async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the text of `css` satisfies `check`; panics with the page after `limit`.
    pub(crate) async fn wait_text(
        &self,
        css: &str,
        limit: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let text = self.text(css).await;
            if check(&text) {
                return text;
            }
            if tokio::time::Instant::now() >= deadline {
                let source = self.client.source().await.unwrap_or_default();
                panic!("timed out waiting on the text of {css} (last: {text:?}); page:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` in the page and returns its value.
    pub(crate) async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("run a script in the page")
    }

    /// A PNG of the whole page at the current width (the window grows to the page's height,
    /// at most `max_height`).
    pub(crate) async fn full_page_png(&mut self, max_height: u32) -> Vec<u8> {
        let (width, height) = self.viewport().await;
        let page_height = self
            .eval("return document.documentElement.scrollHeight;")
            .await
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(height)
            .clamp(200, max_height);
        self.resize(width, page_height).await;
        let png = self.client.screenshot().await.expect("a screenshot");
        self.resize(width, height).await;
        png
    }

    /// Ends the session and the driver.
    pub(crate) async fn close(mut self) {
        self.session = None;
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // a test that panicked never reached `close`: ask chromedriver to end the session, which
        // stops the browser too (killing chromedriver alone would leave Chromium running)
        if let Some(session) = self.session.take() {
            use std::io::{Read, Write};
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    stream,
                    "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
