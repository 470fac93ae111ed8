import com.alipay.common.tracer.core.configuration.SofaTracerConfiguration;
import com.alipay.common.tracer.core.span.CommonSpanTags;
import com.alipay.common.tracer.core.span.SofaTracerSpan;
import com.alipay.sofa.tracer.plugins.springmvc.SpringMvcTracer;

/**
 * The real SOFATracer's Spring MVC plugin writing its digest and stat logs under the directory
 * given as -Dlogging.path (tracelog/spring-mvc-{digest,stat}.log, and the load-test traffic's
 * under tracelog/shadow/), as its servlet filter does for each request: N server spans of
 * order-app, GET and POST /order with a query string, some answering 500, every tenth one a
 * load-test request (business baggage mark=T). The stat period is one second instead of a
 * minute, so that the stat lines are written before the program exits.
 *
 * Prints "done N".
 *
 * Usage: SofaTracerLogs N
 */
public class SofaTracerLogs {
    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]);
        SofaTracerConfiguration.setProperty(SofaTracerConfiguration.STAT_LOG_INTERVAL, "1");
        SpringMvcTracer tracer = SpringMvcTracer.getSpringMvcTracerSingleton();
        for (int i = 0; i < n; i++) {
            SofaTracerSpan span = tracer.serverReceive();
            if (i % 10 == 9) {
                span.getSofaTracerSpanContext().setBizBaggageItem("mark", "T");
            }
            span.setTag(CommonSpanTags.LOCAL_APP, "order-app");
            span.setTag(CommonSpanTags.REQUEST_URL, "http://order.local/order?id=" + i);
            span.setTag(CommonSpanTags.METHOD, i % 4 == 3 ? "POST" : "GET");
            Thread.sleep(2 + i % 5);
            tracer.serverSend(i % 7 == 6 ? "500" : "200");
        }
        // Two stat periods, and time for the digest's asynchronous appender.
        Thread.sleep(3000);
        System.out.println("done " + n);
    }
}
