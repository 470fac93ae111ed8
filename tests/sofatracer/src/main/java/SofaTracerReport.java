import com.alipay.common.tracer.core.SofaTracer;
import com.alipay.common.tracer.core.context.span.SofaTracerSpanContext;
import com.alipay.common.tracer.core.listener.SpanReportListenerHolder;
import com.alipay.common.tracer.core.span.SofaTracerSpan;
import com.alipay.sofa.tracer.plugins.zipkin.ZipkinSofaTracerSpanRemoteReporter;
import io.opentracing.propagation.Format;
import io.opentracing.propagation.TextMap;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import org.springframework.web.client.RestTemplate;

/**
 * One trace with the real SOFATracer, reported through its Zipkin reporter to ZIPKIN_BASE_URL
 * (it posts to {base}/api/v2/spans):
 *
 * <pre>
 * order-app  SERVER "GET /order"            (root, id 0; business baggage tenant=acme, system baggage zone=gz)
 * order-app  CLIENT "GET /stock"            (0.1; a log "cache miss"; tag error)
 *   stock-app  SERVER "GET /stock"          (the callee: the context order-app injected, id 0.1 again)
 *   stock-app  CLIENT "SELECT stock"        (0.1.1)
 *   and, when RUST_URL is given, an HTTP GET of it with the sftc_head header of 0.1: a Rust
 *   service instrumented with sightline-instrument joins the trace there.
 * </pre>
 *
 * Then a load-test request, as SOFATracer marks one (business baggage mark=T): a server and its
 * client, calling RUST_URL with the client's context when it is given.
 *
 * Prints "trace {id}", "shadow {id}" and, with RUST_URL, "rust {status}" for each call.
 *
 * Usage: SofaTracerReport ZIPKIN_BASE_URL [RUST_URL]
 */
public class SofaTracerReport {
    /** A TextMap over a plain map (opentracing 0.22 has no adapter both ways). */
    static TextMap carrier(Map<String, String> map) {
        return new TextMap() {
            @Override
            public Iterator<Map.Entry<String, String>> iterator() {
                return map.entrySet().iterator();
            }

            @Override
            public void put(String key, String value) {
                map.put(key, value);
            }
        };
    }

    public static void main(String[] args) throws Exception {
        String zipkin = args[0];
        String rustUrl = args.length > 1 ? args[1] : null;
        ZipkinSofaTracerSpanRemoteReporter reporter =
                new ZipkinSofaTracerSpanRemoteReporter(new RestTemplate(), zipkin);
        SpanReportListenerHolder.addSpanReportListener(reporter);
        SofaTracer tracer = new SofaTracer.Builder("sightline-test").build();

        SofaTracerSpan server = (SofaTracerSpan) tracer.buildSpan("GET /order")
                .withTag("span.kind", "server")
                .withTag("local.app", "order-app")
                .withTag("request.url", "http://order.local/order")
                .withTag("method", "GET")
                .start();
        server.getSofaTracerSpanContext().setBizBaggageItem("tenant", "acme");
        server.getSofaTracerSpanContext().setSysBaggageItem("zone", "gz");

        SofaTracerSpan client = (SofaTracerSpan) tracer.buildSpan("GET /stock")
                .asChildOf(server)
                .withTag("span.kind", "client")
                .withTag("local.app", "order-app")
                .start();
        client.log("cache miss");
        client.setTag("error", "stock service slow");

        Map<String, String> headers = new HashMap<>();
        tracer.inject(client.getSofaTracerSpanContext(), Format.Builtin.HTTP_HEADERS, carrier(headers));

        // The callee, as SOFATracer's server plugins build it: the received context, unchanged.
        SofaTracerSpanContext received = (SofaTracerSpanContext) tracer.extract(
                Format.Builtin.HTTP_HEADERS, carrier(new HashMap<>(headers)));
        Map<String, Object> calleeTags = new HashMap<>();
        calleeTags.put("span.kind", "server");
        calleeTags.put("local.app", "stock-app");
        SofaTracerSpan callee = new SofaTracerSpan(
                tracer, System.currentTimeMillis(), "GET /stock", received, calleeTags);
        SofaTracerSpan query = (SofaTracerSpan) tracer.buildSpan("SELECT stock")
                .asChildOf(callee)
                .withTag("span.kind", "client")
                .withTag("local.app", "stock-app")
                .start();
        Thread.sleep(2);
        query.finish();
        callee.finish();

        if (rustUrl != null) {
            HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(rustUrl)).GET();
            headers.forEach(request::header);
            HttpResponse<String> response = HttpClient.newHttpClient()
                    .send(request.build(), HttpResponse.BodyHandlers.ofString());
            System.out.println("rust " + response.statusCode());
        }
        client.finish();
        server.finish();

        SofaTracerSpan shadow = (SofaTracerSpan) tracer.buildSpan("GET /order")
                .withTag("span.kind", "server")
                .withTag("local.app", "order-app")
                .start();
        shadow.getSofaTracerSpanContext().setBizBaggageItem("mark", "T");
        SofaTracerSpan shadowClient = (SofaTracerSpan) tracer.buildSpan("GET /stock")
                .asChildOf(shadow)
                .withTag("span.kind", "client")
                .withTag("local.app", "order-app")
                .start();
        if (rustUrl != null) {
            Map<String, String> shadowHeaders = new HashMap<>();
            tracer.inject(shadowClient.getSofaTracerSpanContext(), Format.Builtin.HTTP_HEADERS,
                    carrier(shadowHeaders));
            HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(rustUrl)).GET();
            shadowHeaders.forEach(request::header);
            HttpResponse<String> response = HttpClient.newHttpClient()
                    .send(request.build(), HttpResponse.BodyHandlers.ofString());
            System.out.println("rust " + response.statusCode());
        }
        shadowClient.finish();
        shadow.finish();
        System.out.println("shadow " + shadow.getSofaTracerSpanContext().getTraceId());
        // close() drops what is pending: flush first.
        reporter.flush();
        reporter.close();
        System.out.println("trace " + server.getSofaTracerSpanContext().getTraceId());
    }
}
