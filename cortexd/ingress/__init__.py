"""The hub's network edge: gRPC servers, their options and the auth interceptor."""
