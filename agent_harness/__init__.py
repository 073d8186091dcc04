"""What runs inside an agent's sandbox: `hive-agent`, the harness claude is started through.

- `hive-agent mcp` (mcp_bridge): the stdio MCP server claude starts, forwarding to hive-c0re's
  MCP server on the agent's socket;
- `hive-agent run` (sandbox_run): in a network-less sandbox (bwrap), the model API on a loopback
  port, forwarded to hive-c0re's model proxy socket, around the turn's command.

The bwrap backend shows this package alone in its sandboxes (activities/backends/bwrap_layout.py),
so it imports none of hive's other packages (not the kernel, hyperhive) and never temporalio;
tests/unit/harness/test_harness_imports.py checks that.
"""
