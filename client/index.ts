// Placeholder entry until the client library lands (issue 4); replaced by the real client.
export const version = '0.0.0'
