# A dev server for the preview tests, stdlib only: headers echo, SSE, sha256 of uploads
# (sized or chunked), a WebSocket echo, a response cut short, a redirect. Usage: srv.py PORT [ADDR]
import base64, hashlib, json, socket, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = open('/tmp/srv.log', 'a', buffering=1)


class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def reply(self, code, body, ctype='text/plain'):
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        LOG.write('GET ' + self.path + '\n')
        if self.path == '/headers':
            return self.reply(200, json.dumps({k.lower(): v for k, v in self.headers.items()}).encode(), 'application/json')
        if self.path == '/sse':
            self.send_response(200)
            self.send_header('Content-Type', 'text/event-stream')
            self.send_header('Cache-Control', 'no-cache')
            self.send_header('Connection', 'close')
            self.end_headers()
            for i in range(3):
                self.wfile.write(('data: tick %d\n\n' % i).encode())
                self.wfile.flush()
                time.sleep(1)
            self.close_connection = True
            return
        if self.path == '/ws':
            return self.websocket()
        if self.path == '/close-mid':
            self.send_response(200)
            self.send_header('Content-Length', '1000000')
            self.end_headers()
            self.wfile.write(b'x' * 1000)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if self.path == '/redirect':
            self.send_response(302)
            self.send_header('Location', '/headers')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        self.reply(200, b'hello from ' + self.path.encode())

    def do_POST(self):
        LOG.write('POST ' + self.path + '\n')
        h, n = hashlib.sha256(), 0
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    break
                left = size
                while left:
                    d = self.rfile.read(min(left, 65536))
                    h.update(d)
                    n += len(d)
                    left -= len(d)
                self.rfile.readline()
        else:
            left = int(self.headers.get('Content-Length') or 0)
            while left > 0:
                d = self.rfile.read(min(left, 65536))
                if not d:
                    break
                h.update(d)
                n += len(d)
                left -= len(d)
        out = {'sha256': h.hexdigest(), 'len': n, 'te': self.headers.get('Transfer-Encoding'),
               'cl': self.headers.get('Content-Length')}
        self.reply(200, json.dumps(out).encode(), 'application/json')

    def websocket(self):
        key = self.headers['Sec-WebSocket-Key']
        accept = base64.b64encode(hashlib.sha1((key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest())
        self.send_response(101)
        self.send_header('Upgrade', 'websocket')
        self.send_header('Connection', 'Upgrade')
        self.send_header('Sec-WebSocket-Accept', accept.decode())
        self.end_headers()
        self.wfile.flush()
        r, w = self.rfile, self.wfile
        while True:
            head = r.read(2)
            if len(head) < 2:
                break
            op, n, masked = head[0] & 0x0F, head[1] & 0x7F, head[1] & 0x80
            if n == 126:
                n = int.from_bytes(r.read(2), 'big')
            elif n == 127:
                n = int.from_bytes(r.read(8), 'big')
            mask = r.read(4) if masked else b'\0\0\0\0'
            data = r.read(n)
            if masked and n:
                keys = (mask * (n // 4 + 1))[:n]
                data = (int.from_bytes(data, 'big') ^ int.from_bytes(keys, 'big')).to_bytes(n, 'big')
            if op == 9:
                op = 10
            if n < 126:
                hdr = bytes([0x80 | op, n])
            elif n < 65536:
                hdr = bytes([0x80 | op, 126]) + n.to_bytes(2, 'big')
            else:
                hdr = bytes([0x80 | op, 127]) + n.to_bytes(8, 'big')
            w.write(hdr + data)
            w.flush()
            if op == 8:
                break
        self.close_connection = True


class S(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6 if ':' in (sys.argv[2] if len(sys.argv) > 2 else '') else socket.AF_INET

    def server_activate(self):
        super().server_activate()
        with open('/tmp/listen-%d' % self.server_address[1], 'w') as f:
            f.write(repr(time.time()))


S((sys.argv[2] if len(sys.argv) > 2 else '0.0.0.0', int(sys.argv[1])), H).serve_forever()
