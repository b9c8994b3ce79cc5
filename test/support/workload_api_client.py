"""A SPIFFE Workload API client on Debian's grpcio and protobuf (python3-grpcio, python3-protobuf): code
Baton did not write, calling the agent's socket as a workload would.

The stubs (workload_pb2, workload_pb2_grpc) are generated at test time by protoc and
grpc_python_plugin from clients/rotation/src/workload-api/workload.proto and found on PYTHONPATH.

usage:
  x509 SOCKET N             FetchX509SVID: one JSON line per message, {"svids": [{"spiffe_id",
                            "serial", "hint", "chain", "key_bytes", "bundle"}], "crls": n}, until
                            N messages
  jwt SOCKET AUD            FetchJWTSVID: {"svids": [{"spiffe_id", "svid", "hint"}]}
  validate SOCKET AUD TOKEN ValidateJWTSVID: {"spiffe_id", "claims"}
  nometa SOCKET             FetchX509SVID without the workload.spiffe.io metadata

A gRPC error is one JSON line {"error": "<status code name>", "details": "..."} and exit status 3.
Every line is flushed at once: the caller reads them while the stream is open. Serials are
lowercase hex in whole bytes, as Baton prints them.
"""

import json
import sys

import grpc
from cryptography import x509
from google.protobuf.json_format import MessageToDict

import workload_pb2
import workload_pb2_grpc

METADATA = (("workload.spiffe.io", "true"),)
TIMEOUT_SECONDS = 30


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def split_der(blob):
    """Concatenated DER certificates (X.509-SVID profile: the leaf first), one by one."""
    out = []
    i = 0
    while i < len(blob):
        if blob[i] != 0x30:
            raise ValueError(f"not a DER SEQUENCE at offset {i}")
        first = blob[i + 1]
        if first < 0x80:
            header, length = 2, first
        else:
            n = first & 0x7F
            header, length = 2 + n, int.from_bytes(blob[i + 2 : i + 2 + n], "big")
        out.append(x509.load_der_x509_certificate(blob[i : i + header + length]))
        i += header + length
    return out


def serial_hex(cert):
    s = format(cert.serial_number, "x")
    return s if len(s) % 2 == 0 else "0" + s


def svid_json(svid):
    chain = split_der(svid.x509_svid)
    return {
        "spiffe_id": svid.spiffe_id,
        "serial": serial_hex(chain[0]),
        "hint": svid.hint,
        "chain": len(chain),
        "key_bytes": len(svid.x509_svid_key),
        "bundle": len(split_der(svid.bundle)),
    }


def x509_svids(stub, count, metadata):
    seen = 0
    for message in stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=metadata):
        emit({"svids": [svid_json(s) for s in message.svids], "crls": len(message.crl)})
        seen += 1
        if seen >= count:
            return


def main(argv):
    command, socket = argv[1], argv[2]
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        try:
            if command == "x509":
                x509_svids(stub, int(argv[3]), METADATA)
            elif command == "nometa":
                x509_svids(stub, 1, ())
            elif command == "jwt":
                r = stub.FetchJWTSVID(
                    workload_pb2.JWTSVIDRequest(audience=[argv[3]]), metadata=METADATA, timeout=TIMEOUT_SECONDS
                )
                emit({"svids": [{"spiffe_id": s.spiffe_id, "svid": s.svid, "hint": s.hint} for s in r.svids]})
            elif command == "validate":
                r = stub.ValidateJWTSVID(
                    workload_pb2.ValidateJWTSVIDRequest(audience=argv[3], svid=argv[4]),
                    metadata=METADATA,
                    timeout=TIMEOUT_SECONDS,
                )
                emit({"spiffe_id": r.spiffe_id, "claims": MessageToDict(r.claims)})
            else:
                sys.stderr.write(f"unknown command {command}\n")
                return 2
        except grpc.RpcError as e:
            emit({"error": e.code().name, "details": e.details()})
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
