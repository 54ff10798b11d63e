"""TLS connections (a cloud cluster's head) over real loopback TCP, on asyncio and uvloop:
the same frames and token handshake inside TLS, the client trusting the cluster's CA only."""

import asyncio

import pytest

from burla import AuthenticationError, ClusterUnreachable, ConfigError
from burla.cloud._pki import new_certificates
from burla.transport import TransportConfig, connect, serve
from burla.transport._tls import client_context, read_ca, server_context
from burla.transport.messages import InputCredit, ResultAck

TOKEN = "s3cret"
CERTS = new_certificates("t1")
OTHER = new_certificates("t2")


async def _echo(tls, config: TransportConfig = TransportConfig()):
    async def handler(conn):
        while True:
            await conn.send(await conn.recv())

    server = await serve("127.0.0.1", 0, TOKEN, handler, config, tls=tls)
    return server, server.sockets[0].getsockname()[1]


def test_roundtrip_over_tls_with_the_clusters_ca(run) -> None:
    async def main():
        cfg = TransportConfig(max_frame=4096)
        server, port = await _echo(server_context(CERTS.head_cert, CERTS.head_key), cfg)
        conn = await connect("127.0.0.1", port, TOKEN, cfg, client_context(CERTS.ca))
        await conn.send(InputCredit("j", 3))
        assert await conn.recv() == InputCredit("j", 3)
        big = ResultAck("x" * 300_000, 1)  # many frames, many TLS records
        await conn.send(big)
        assert await conn.recv() == big
        await conn.close()
        with pytest.raises(AuthenticationError, match="rejected our token"):  # the token still counts
            await connect("127.0.0.1", port, "wrong", cfg, client_context(CERTS.ca))
        server.close()

    run(main())


def test_a_head_of_another_ca_is_refused(run) -> None:
    async def main():
        server, port = await _echo(server_context(OTHER.head_cert, OTHER.head_key))
        with pytest.raises(AuthenticationError, match=r"not this cluster.s head.*burla status --ca"):
            await connect("127.0.0.1", port, TOKEN, TransportConfig(), client_context(CERTS.ca))
        server.close()

    run(main())


def test_tls_client_and_plaintext_server_fail_fast_and_say_why(run) -> None:
    async def main():
        cfg = TransportConfig(handshake_timeout=1.0)
        plain, port = await _echo(None, cfg)
        with pytest.raises(ClusterUnreachable, match="does not speak TLS"):
            await connect("127.0.0.1", port, TOKEN, cfg, client_context(CERTS.ca))
        plain.close()
        tls, port = await _echo(server_context(CERTS.head_cert, CERTS.head_key), cfg)
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(ClusterUnreachable, match="speaks TLS only: connect with its CA"):
            await connect("127.0.0.1", port, TOKEN, cfg)  # plaintext to a TLS head
        assert asyncio.get_running_loop().time() - t0 < 5
        tls.close()

    run(main())


def test_read_ca_takes_text_or_a_file_and_names_what_is_wrong(tmp_path) -> None:
    assert read_ca(CERTS.ca) == CERTS.ca
    f = tmp_path / "ca.pem"
    f.write_text(CERTS.ca)
    assert read_ca(str(f)) == CERTS.ca
    with pytest.raises(ConfigError, match="cannot read"):
        read_ca(str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        read_ca(str(tmp_path / "junk.pem"))
    with pytest.raises(ConfigError, match="not valid PEM"):
        client_context("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert "PRIVATE KEY" not in CERTS.ca and "PRIVATE KEY" in CERTS.head_key
