use archestra_proxy::BackgroundServer;

use crate::common::*;

#[test]
fn health_reports_mcp_from_the_configured_probe() {
    let scratch = Scratch::new();
    // Another server stands in for the MCP gateway: anything that answers below 500 is up.
    let gateway = start(&scratch.dir.path().join("gateway.db"), 10);
    let mut with_gateway = config(&scratch.db());
    with_gateway.mcp_health_url = Some(format!("{}/v1/health", gateway.origin()));
    let server = BackgroundServer::start(with_gateway).unwrap();
    let client = client();

    let report: serde_json::Value = client
        .get(format!(
            "{}/v1/health?mcp=archestra&llm=anthropic",
            server.origin()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(report, serde_json::json!({"mcp": "ok", "llm": "ok"}));

    // A gateway that does not answer is down.
    let gone = gateway.origin();
    gateway.stop();
    let mut without_gateway = config(&scratch.dir.path().join("other.db"));
    without_gateway.mcp_health_url = Some(format!("{gone}/v1/health"));
    let server = BackgroundServer::start(without_gateway).unwrap();
    let report: serde_json::Value = client
        .get(format!("{}/v1/health?mcp=archestra", server.origin()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(report, serde_json::json!({"mcp": "down"}));
}
