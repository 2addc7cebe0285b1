"""Authentication of the gateway: who a request is (``deps.current_principal``), the tokens it
signs (``tokens``) and the routes that sign in, out and manage users and API keys."""
