//! The binary's HTTP/1.1 client: bodies posted to a running Sightline on kept-alive
//! connections, for the benchmarks and `sightline import`.

use anyhow::Context;

pub type Connection = tokio::io::BufStream<tokio::net::TcpStream>;

/// A query parameter's value, form-encoded (as the server's parameters are read).
pub fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A connection to `host` (`127.0.0.1:9411`), without Nagle's delay: otherwise a body's last
/// segment waits for the delayed ACK (40 ms) and the client, not the server, sets the pace.
pub async fn connect(host: &str) -> anyhow::Result<Connection> {
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connect to {host}"))?;
    let _ = stream.set_nodelay(true);
    Ok(tokio::io::BufStream::new(stream))
}

/// An HTTP/1.1 POST on a kept-alive connection, `headers` being whole header lines; the status,
/// the body, and the connection for the next.
pub async fn post_body(
    mut stream: Connection,
    host: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>, Connection)> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut rest = vec![0u8; length];
    stream.read_exact(&mut rest).await?;
    Ok((status, rest, stream))
}
