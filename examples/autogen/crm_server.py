"""A toy CRM: an MCP server (Streamable HTTP on 127.0.0.1:9000/mcp) behind the onbehalf MCP gateway.

Needs the MCP Python SDK (`pip install mcp`; autogen-ext[mcp] installs it). Run: python examples/autogen/crm_server.py
"""

from mcp.server.fastmcp import FastMCP

CUSTOMERS = {
    "c-1": {"id": "c-1", "name": "Ada Lovelace", "email": "ada@example.com", "ssn": "078-05-1120", "tier": "gold"},
    "c-2": {"id": "c-2", "name": "Alan Turing", "email": "alan@example.com", "ssn": "219-09-9999", "tier": "silver"},
}

mcp = FastMCP("crm", host="127.0.0.1", port=9000)


@mcp.tool()
def get_customer(customer_id: str) -> dict:
    """A customer record by id (c-1, c-2, ...)."""
    return CUSTOMERS.get(customer_id, {"error": f"no customer {customer_id}"})


if __name__ == "__main__":
    mcp.run(transport="streamable-http")
