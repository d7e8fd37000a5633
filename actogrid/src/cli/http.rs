//! A small HTTP/1.1 client for a deployment's dashboard: GET, with the
//! token of the dashboard's URL, an answer of bounded size (plain or
//! chunked), and every failure said in words.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest answer read (a deployment's state, its logs).
const MAX_BODY: usize = 64 << 20;
/// How long connecting and the answer's head may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A dashboard URL, `http://host:port/?token=…`.
#[derive(Debug, Clone)]
pub(crate) struct Dashboard {
    pub(crate) address: String,
    pub(crate) token: Option<String>,
}

/// The dashboard URL given, or else the one dashboard running on this
/// machine for this user (as it left its URL when it started).
pub(crate) fn given_or_running(url: Option<&str>) -> anyhow::Result<String> {
    if let Some(url) = url {
        return Ok(url.to_owned());
    }
    let running = actogrid::running_dashboards();
    match running.as_slice() {
        [one] => Ok(one.url.clone()),
        [] => anyhow::bail!(
            "no dashboard is running on this machine for this user: give the URL a deployment \
             (or `actogrid peer`) printed when it started"
        ),
        several => {
            let list: Vec<String> = several
                .iter()
                .map(|d| format!("  {} of pid {}: {}", d.kind, d.pid, d.url))
                .collect();
            anyhow::bail!(
                "{} dashboards are running on this machine; give the URL of one:\n{}",
                several.len(),
                list.join("\n")
            )
        }
    }
}

impl Dashboard {
    pub(crate) fn parse(url: &str) -> anyhow::Result<Dashboard> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            anyhow::anyhow!(
                "`{url}` is not a dashboard URL: give the http://host:port/?token=… a deployment prints when it starts"
            )
        })?;
        let (address, path) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(
            !address.is_empty() && address.contains(':'),
            "`{url}`: no host:port in this URL"
        );
        let token = path
            .split_once('?')
            .map_or("", |(_, q)| q)
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_owned);
        Ok(Dashboard {
            address: address.to_owned(),
            token,
        })
    }

    /// `path?query`, with the token added.
    fn target(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut parts: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        if let Some(t) = &self.token {
            parts.push(format!("token={}", encode(t)));
        }
        if parts.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", parts.join("&"))
        }
    }

    /// Opens a GET of `path`; returns the answer's body as a reader.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Body> {
        let target = self.target(path, query);
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| anyhow::anyhow!("{}: no answer within {TIMEOUT:?}", self.address))?
            .map_err(|e| {
                anyhow::anyhow!("{}: {e} (is the deployment still running?)", self.address)
            })?;
        let mut reader = BufReader::new(stream);
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: actogrid\r\n\r\n",
            self.address
        );
        reader.get_mut().write_all(request.as_bytes()).await?;
        let head = tokio::time::timeout(TIMEOUT, read_head(&mut reader))
            .await
            .map_err(|_| anyhow::anyhow!("{}: no answer within {TIMEOUT:?}", self.address))??;
        let mut body = Body {
            reader,
            chunked: head.chunked,
            left_in_chunk: 0,
            done: false,
            read: 0,
        };
        if head.status != 200 {
            let text = body.all().await.unwrap_or_default();
            anyhow::bail!(
                "{}: {} {}",
                self.address,
                head.status,
                String::from_utf8_lossy(&text).trim()
            );
        }
        Ok(body)
    }
}

/// Percent-encodes what is not safe in a query value.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Head {
    status: u16,
    chunked: bool,
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> anyhow::Result<Head> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer: `{}`", line.trim()))?;
    let mut chunked = false;
    let mut headers = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            anyhow::bail!("the answer ended in its headers");
        }
        headers += 1;
        anyhow::ensure!(headers < 100 && line.len() < 8192, "headers too large");
        let l = line.trim();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    Ok(Head { status, chunked })
}

/// An answer's body.
pub(crate) struct Body {
    reader: BufReader<TcpStream>,
    chunked: bool,
    left_in_chunk: usize,
    done: bool,
    read: usize,
}

impl Body {
    /// The next bytes (empty at the end).
    pub(crate) async fn next(&mut self) -> anyhow::Result<Vec<u8>> {
        if self.done {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; 16 * 1024];
        let n = if self.chunked {
            if self.left_in_chunk == 0 {
                let mut size = String::new();
                self.reader.read_line(&mut size).await?;
                let size = size.trim();
                if size.is_empty() {
                    // The CRLF after a chunk.
                    size_line(&mut self.reader).await.map(|n| {
                        self.left_in_chunk = n;
                    })?;
                } else {
                    self.left_in_chunk =
                        usize::from_str_radix(size.split(';').next().unwrap_or(size), 16)
                            .map_err(|_| anyhow::anyhow!("bad chunk size `{size}`"))?;
                }
                if self.left_in_chunk == 0 {
                    self.done = true;
                    return Ok(Vec::new());
                }
            }
            let want = self.left_in_chunk.min(buf.len());
            let n = self.reader.read(&mut buf[..want]).await?;
            anyhow::ensure!(n > 0, "the answer ended in a chunk");
            self.left_in_chunk -= n;
            n
        } else {
            let n = self.reader.read(&mut buf).await?;
            if n == 0 {
                self.done = true;
            }
            n
        };
        self.read += n;
        anyhow::ensure!(
            self.read <= MAX_BODY,
            "the answer is larger than {MAX_BODY} bytes"
        );
        buf.truncate(n);
        Ok(buf)
    }

    /// The whole body.
    pub(crate) async fn all(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let part = self.next().await?;
            if part.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&part);
        }
    }
}

async fn size_line(reader: &mut BufReader<TcpStream>) -> anyhow::Result<usize> {
    let mut size = String::new();
    reader.read_line(&mut size).await?;
    let size = size.trim();
    usize::from_str_radix(size.split(';').next().unwrap_or(size), 16)
        .map_err(|_| anyhow::anyhow!("bad chunk size `{size}`"))
}
